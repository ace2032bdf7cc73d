from __future__ import annotations

import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand

from orchestrator.process import GracefulExit
from webhooks.worker import DeliveryWorker


class Command(BaseCommand):
    help = "Make webhook delivery attempts: claim what is due, send, record (the delivery process)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--concurrency", type=int, default=settings.WEBHOOK_CONCURRENCY)

    def handle(self, *args, concurrency: int, **options) -> str:
        made = asyncio.run(DeliveryWorker(concurrency=concurrency, stop=GracefulExit()).run())
        return f"delivery: made {made} attempts"
