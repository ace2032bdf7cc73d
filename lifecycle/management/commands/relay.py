from __future__ import annotations

from django.core.management.base import BaseCommand

from lifecycle import relay
from orchestrator.process import GracefulExit


class Command(BaseCommand):
    help = "Publish committed outbox rows to Kafka (the outbox relay process)."

    def handle(self, *args, **options) -> str:
        published = relay.serve(GracefulExit())
        return f"relay: published {published} messages"
