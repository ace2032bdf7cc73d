from __future__ import annotations

from django.core.management.base import BaseCommand

from lifecycle import following, relay
from orchestrator.process import GracefulExit


class Command(BaseCommand):
    help = "Publish committed outbox rows to Kafka, and lifecycle events live to the realtime processes (the relay)."

    def handle(self, *args, **options) -> str:
        live = following.live()  # the realtime app's fan-out (realtime/fanout.py)
        try:
            published = relay.serve(GracefulExit(), live)
        finally:
            if live is not None:
                live.close()
        return f"relay: published {published} messages"
