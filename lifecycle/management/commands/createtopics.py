from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from lifecycle import kafka
from lifecycle.outbox import TOPICS


class Command(BaseCommand):
    help = "Create the service's Kafka topics if they are missing (partitions: KAFKA_TOPIC_PARTITIONS)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--partitions", type=int, default=settings.KAFKA_TOPIC_PARTITIONS)

    def handle(self, *args, partitions: int, **options) -> None:
        kafka.ensure_topics(partitions=partitions)
        existing = kafka.admin_client().list_topics(timeout=10).topics
        for topic in TOPICS:
            self.stdout.write(f"{topic}: {len(existing[topic].partitions)} partitions")
