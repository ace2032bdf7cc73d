from __future__ import annotations

import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand

from lifecycle import kafka
from lifecycle.generator import Generator
from orchestrator.process import GracefulExit


class Command(BaseCommand):
    help = "Consume lifecycle.requests and run generations against the providers (the generator process)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--concurrency", type=int, default=settings.GENERATOR_CONCURRENCY)

    def handle(self, *args, concurrency: int, **options) -> str:
        stop = GracefulExit()
        if not kafka.ensure_topics_when_available(stop):
            return "stopped before the broker answered"
        handled = asyncio.run(Generator(concurrency=concurrency, stop=stop).run())
        return f"generator: handled {handled} requests"
