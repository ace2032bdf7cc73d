from __future__ import annotations

import json
import uuid
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from lifecycle.models import Project

NONE = "none"


def _cap(raw: str) -> int | None:
    if raw == NONE:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise CommandError(f"--max-in-flight: a whole number from 1, or {NONE} (got {raw!r})")
    return int(raw)


def _budget(raw: str) -> Decimal | None:
    if raw == NONE:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = Decimal(-1)
    if not value.is_finite() or value < 0 or value.as_tuple().exponent < -2:
        raise CommandError(f"--daily-budget-usd: dollars, at most two decimals, or {NONE} (got {raw!r})")
    return value


class Command(BaseCommand):
    help = (
        "Show or set a project's flow-control limits (shared/ARCHITECTURE.md, Flow control): "
        "`projectlimits PROJECT_ID [--max-in-flight N|none] [--daily-budget-usd D|none]`. Prints the "
        "project's limits as JSON. Generators pick a new cap up within 5 s; a budget holds at once."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("project_id")
        parser.add_argument("--max-in-flight", help="generations running at once, across every generator")
        parser.add_argument("--daily-budget-usd", help="past this spend in a day (UTC), requests get 429")

    def handle(self, *args, project_id: str, max_in_flight: str | None, daily_budget_usd: str | None, **options):
        project = Project.objects.filter(id=project_id).first() if _is_uuid(project_id) else None
        if project is None:
            raise CommandError(f"no project {project_id}")
        changed = []
        if max_in_flight is not None:
            project.max_generations_in_flight = _cap(max_in_flight)
            changed.append("max_generations_in_flight")
        if daily_budget_usd is not None:
            project.daily_budget_usd = _budget(daily_budget_usd)
            changed.append("daily_budget_usd")
        if changed:
            project.save(update_fields=changed)
        budget = project.daily_budget_usd
        self.stdout.write(
            json.dumps(
                {
                    "project_id": str(project.id),
                    "max_generations_in_flight": project.max_generations_in_flight,
                    "daily_budget_usd": None if budget is None else str(budget),
                }
            )
        )


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
