"""The outbox relay: publishes committed outbox rows to Kafka, in order, and marks them published.

One relay publishes at a time (it holds a Postgres advisory lock); others wait as hot standbys, so order
per lifecycle is kept without any lock service. A commit wakes the relay through LISTEN/NOTIFY; a timeout
poll catches anything a missed notification left behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import orjson
import psycopg
from confluent_kafka import KafkaError, Producer
from django.db import transaction
from django.utils import timezone

from lifecycle import kafka
from lifecycle.models import OutboxMessage
from lifecycle.outbox import NOTIFY_CHANNEL
from orchestrator import db

log = logging.getLogger(__name__)

ADVISORY_LOCK_ID = 0x0B0C5  # any constant shared by all relays
BATCH_SIZE = 500


class DeliveryFailed(Exception):
    pass


@dataclass
class Relay:
    producer: Producer
    batch_size: int = BATCH_SIZE

    @classmethod
    def create(cls) -> Relay:
        return cls(producer=Producer(kafka.producer_config()))

    def publish_pending(self) -> int:
        """Publish one batch of unpublished rows; return how many went out.

        1. Lock the oldest unpublished rows (``FOR UPDATE``, in id order) inside a transaction.
        2. Produce them all, then flush and wait for every delivery report.
        3. Mark them published and commit. If Kafka failed, roll back: they go out again next time
           (at-least-once; consumers are idempotent).
        """
        with transaction.atomic():
            batch = list(
                OutboxMessage.objects.select_for_update()
                .filter(published_at__isnull=True)
                .order_by("id")[: self.batch_size]
            )
            if not batch:
                return 0
            errors: list[KafkaError] = []

            def on_delivery(err, _msg):
                if err is not None:
                    errors.append(err)

            for message in batch:
                self._produce(message, on_delivery)
            remaining = self.producer.flush(30)
            if remaining or errors:
                raise DeliveryFailed(f"{remaining} unsent, errors: {errors[:3]}")
            OutboxMessage.objects.filter(id__in=[m.id for m in batch]).update(published_at=timezone.now())
            return len(batch)

    def _produce(self, message: OutboxMessage, on_delivery) -> None:
        while True:
            try:
                self.producer.produce(
                    message.topic,
                    key=message.key.encode(),
                    value=orjson.dumps(message.payload),
                    headers=kafka.encode_headers(message.headers),
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                self.producer.poll(0.1)  # local queue full: let deliveries drain


def prune_published(*, older_than_s: int = 3600) -> int:
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    deleted, _ = OutboxMessage.objects.filter(published_at__lt=cutoff).delete()
    return deleted


def control_connection() -> psycopg.Connection:
    """The relay's own autocommit connection: it holds the leader lock for the life of the process (the
    lock goes with it if the process dies) and LISTENs for outbox commits."""
    conn = psycopg.connect(**db.connection_params(), autocommit=True)
    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
    return conn


def try_become_leader(conn: psycopg.Connection) -> bool:
    return bool(conn.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_ID]).fetchone()[0])


def wait_for_notify(conn: psycopg.Connection, timeout: float) -> None:
    for _ in conn.notifies(timeout=timeout, stop_after=1):
        pass
