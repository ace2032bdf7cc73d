from __future__ import annotations

import asyncio

from django.core.management.base import BaseCommand

from lifecycle import kafka
from orchestrator.process import GracefulExit
from realtime.bridge import Bridge


class Command(BaseCommand):
    help = "Forward lifecycle.events to the WebSocket channel groups (the realtime bridge process)."

    def handle(self, *args, **options) -> str:
        stop = GracefulExit()
        if not kafka.ensure_topics_when_available(stop):
            return "stopped before the broker answered"
        forwarded = asyncio.run(Bridge(stop=stop).run())
        return f"bridge: forwarded {forwarded} events"
