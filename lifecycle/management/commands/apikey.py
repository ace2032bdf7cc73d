from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from lifecycle.models import ApiKey, Project
from lifecycle.services import api_key_create, api_key_revoke


class Command(BaseCommand):
    help = (
        "Manage API keys. `apikey create PROJECT_ID [--name N]` and `apikey rotate PREFIX` print the new key "
        "once (JSON); `apikey revoke PREFIX`; `apikey list PROJECT_ID`."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["create", "rotate", "revoke", "list"])
        parser.add_argument("target", help="a project id (create, list) or a key prefix (rotate, revoke)")
        parser.add_argument("--name", default="default")

    def handle(self, *args, action: str, target: str, name: str, **options) -> None:
        if action in ("create", "list"):
            project = Project.objects.filter(id=target).first()
            if project is None:
                raise CommandError(f"no project {target}")
            if action == "create":
                key, raw = api_key_create(project=project, name=name)
                self._print({"project_id": str(project.id), "prefix": key.prefix, "api_key": raw})
            else:
                for key in project.api_keys.order_by("created_at"):
                    self._print(
                        {"prefix": key.prefix, "name": key.name, "created_at": key.created_at.isoformat(),
                         "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None}
                    )  # fmt: skip
            return
        key = ApiKey.objects.select_related("project").filter(prefix=target).first()
        if key is None:
            raise CommandError(f"no key with prefix {target}")
        if action == "revoke":
            api_key_revoke(key=key)
            self._print({"revoked": key.prefix})
            return
        with transaction.atomic():  # rotate: a new key for the same project, the old one revoked with it
            new, raw = api_key_create(project=key.project, name=key.name)
            api_key_revoke(key=key)
        self._print({"project_id": str(key.project_id), "revoked": key.prefix, "prefix": new.prefix, "api_key": raw})

    def _print(self, data: dict) -> None:
        self.stdout.write(json.dumps(data))
