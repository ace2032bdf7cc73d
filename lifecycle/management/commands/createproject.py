from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from lifecycle.services import project_create


class Command(BaseCommand):
    help = 'Create a project and its first API key; prints {"project_id", "api_key"} (the key is shown once).'

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")

    def handle(self, *args, name: str, **options) -> None:
        project, api_key = project_create(name=name)
        self.stdout.write(json.dumps({"project_id": str(project.id), "api_key": api_key}))
