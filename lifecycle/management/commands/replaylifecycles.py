from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from lifecycle.models import Project
from lifecycle.selectors import lifecycle_list
from lifecycle.services import lifecycle_replay
from lifecycle.states import Status


class Command(BaseCommand):
    help = (
        "Replay the lifecycles of a project matching filters (a time range after a model change, every failed "
        "one, ...): each gets a new lifecycle from the same input, linked to the original."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("project_id")
        parser.add_argument("--since", help="created at or after (ISO 8601)")
        parser.add_argument("--until", help="created before (ISO 8601)")
        parser.add_argument("--status", choices=Status.values)
        parser.add_argument("--model", help="only lifecycles asking for this model")
        parser.add_argument("--limit", type=int, default=10_000)
        parser.add_argument("--dry-run", action="store_true", help="count what would be replayed")

    def handle(self, *args, project_id, since, until, status, model, limit, dry_run, **options) -> str:
        project = Project.objects.filter(id=project_id).first()
        if project is None:
            raise CommandError(f"no project {project_id}")
        bounds = {}
        for name, raw in (("created_after", since), ("created_before", until)):
            if raw:
                bounds[name] = parse_datetime(raw)
                if bounds[name] is None:
                    raise CommandError(f"not an ISO 8601 date-time: {raw}")
        queryset = lifecycle_list(project=project, status=status, **bounds).order_by("created_at")
        if model:
            queryset = queryset.filter(model=model)
        originals = list(queryset[:limit])
        if dry_run:
            return f"would replay {len(originals)} lifecycles"
        for original in originals:
            replay = lifecycle_replay(lifecycle=original)
            self.stdout.write(f"{original.id} -> {replay.id}")
        return f"replayed {len(originals)} lifecycles"
