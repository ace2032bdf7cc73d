from __future__ import annotations

from django.core.management.base import BaseCommand

from lifecycle.relay import outbox_republish_recent


class Command(BaseCommand):
    help = (
        "After the Kafka broker lost its log (the embedded broker restarted, a cluster restored from an old "
        "backup): publish again the recent outbox messages of lifecycles still under way."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--seconds", type=float, default=60, help="how far back (default 60)")

    def handle(self, *args, seconds: float, **options) -> str:
        return f"marked {outbox_republish_recent(within_s=seconds)} outbox messages for publishing again"
