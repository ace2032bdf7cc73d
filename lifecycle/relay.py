"""The outbox relay: publishes committed outbox rows to Kafka, in order, and marks them published.

One relay publishes at a time (it holds a Postgres advisory lock); others wait as hot standbys, so order
per lifecycle is kept without any lock service. A commit wakes the relay through LISTEN/NOTIFY; a timeout
poll catches anything a missed notification left behind. Each batch's lifecycle events also go live to the
realtime processes as the batch goes to Kafka (``fan_out``: :mod:`realtime.fanout`, best-effort).

An outage of PostgreSQL or of the broker stops the publishing, never the process (:func:`serve`): the lock
goes with a lost connection, so after reconnecting the relay competes for leadership again before it
publishes anything.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from confluent_kafka import KafkaError, KafkaException, Producer
from django.db import DatabaseError as DjangoDatabaseError
from django.db import close_old_connections, connection
from django.utils import timezone

from lifecycle import kafka
from lifecycle.following import LiveEvents
from lifecycle.models import OutboxMessage
from lifecycle.outbox import NOTIFY_CHANNEL
from orchestrator import db, liveness
from orchestrator.outages import Outage, transient
from orchestrator.process import GracefulExit

log = logging.getLogger(__name__)

ADVISORY_LOCK_ID = 0x0B0C5  # any constant shared by all relays
BATCH_SIZE = 500
FLUSH_TIMEOUT_S = 10  # a broker that takes longer is treated as away: the batch is rolled back, tried again
IDLE_POLL_S = 1.0
PRUNE_EVERY_S = 300


class DeliveryFailed(Exception):
    pass


# One round trip claims a batch: BEGIN and this UPDATE go out together (psycopg's pipeline mode), and the
# rows come back marked; a second commits them once Kafka has them all, or rolls them back to unpublished.
CLAIM_BATCH = (
    "UPDATE lifecycle_outboxmessage SET published_at = now() WHERE id IN ("
    " SELECT id FROM lifecycle_outboxmessage WHERE published_at IS NULL ORDER BY id LIMIT %s FOR UPDATE)"
    " RETURNING id, topic, key, payload::text, headers"
)


@dataclass
class Relay:
    producer: Producer
    batch_size: int = BATCH_SIZE
    published: int = 0
    conn: psycopg.Connection | None = None  # its own, outside Django's ORM: this loop is all it does
    # Called with each batch once it is produced, before the flush waits for Kafka: must not raise, and must
    # not take long (the realtime fan-out gives up after half a second, and backs off while Redis is away).
    fan_out: LiveEvents | None = None

    @classmethod
    def create(cls, fan_out: LiveEvents | None = None) -> Relay:
        return cls(producer=Producer(kafka.producer_config()), fan_out=fan_out)

    def publish_pending(self) -> int:
        """Publish one batch of unpublished rows; return how many went out.

        1. Mark the oldest unpublished rows published and take them, locked, in one statement of an open
           transaction.
        2. Produce them all in id order, hand them to ``fan_out`` while librdkafka sends them, then flush and
           wait for every delivery report.
        3. Commit. If Kafka failed, roll back: they go out again next time (at-least-once; consumers are
           idempotent). Each payload goes to Kafka as PostgreSQL's text of it, never parsed here.
        """
        conn = self._connection()
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                claimed = conn.execute(CLAIM_BATCH, [self.batch_size])
            batch = sorted(claimed.fetchall())
            if not batch:
                conn.execute("ROLLBACK")
                return 0
            self._send(batch)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self.published += len(batch)
        return len(batch)

    def _send(self, batch: list[tuple]) -> None:
        errors: list[KafkaError] = []

        def on_delivery(err, _msg):
            if err is not None:
                errors.append(err)

        try:
            for _, topic, key, payload, headers in batch:
                self._produce(topic, key, payload, headers, on_delivery)
            if self.fan_out is not None:
                self.fan_out(batch)
            remaining = self.producer.flush(FLUSH_TIMEOUT_S)
        except KafkaException as exc:  # the producer itself failed: an idempotent producer's fatal error
            remaining, errors = len(batch), [*errors, exc.args[0]]
        if remaining or errors:
            self._new_producer()
            raise DeliveryFailed(f"{remaining} unsent, errors: {errors[:3]}")

    def _connection(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(**db.connection_params(), autocommit=True)
        return self.conn

    def _rollback(self) -> None:
        """Leave nothing half-done: roll back the open transaction, or drop a connection that broke (its
        transaction went with it)."""
        if self.conn is None:
            return
        try:
            self.conn.execute("ROLLBACK")
        except psycopg.Error:
            self.close()

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None

    def _new_producer(self) -> None:
        """After a batch the broker did not take: drop this producer with whatever it still holds (or every
        retry during a long outage would queue another copy of the batch) and start a fresh one. A broker
        that came back with an empty log (the embedded one restarted) no longer knows the idempotent
        producer's sequence: an old producer waits for acknowledgements that never come, or fails for good
        (librdkafka's fatal error)."""
        self.producer.purge(in_queue=True, in_flight=True)
        self.producer.poll(0)
        self.producer = Producer(kafka.producer_config())

    def _produce(self, topic: str, key: str, payload: str, headers: dict, on_delivery) -> None:
        while True:
            try:
                self.producer.produce(
                    topic,
                    key=key.encode(),
                    value=payload.encode(),
                    headers=kafka.encode_headers(headers),
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                self.producer.poll(0.1)  # local queue full: let deliveries drain


def prune_published(*, older_than_s: int = 3600) -> int:
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    deleted, _ = OutboxMessage.objects.filter(published_at__lt=cutoff).delete()
    return deleted


def outbox_republish_recent(*, within_s: float, finished_within_s: float = 10) -> int:
    """Mark for publishing again the outbox rows of the last ``within_s`` seconds that are about lifecycles
    still under way (or just finished): after a broker lost its log (the embedded one restarted, a cluster
    restored from an old backup), whatever it had not handed on yet goes out again. Consumers are idempotent,
    so what they had already handled is a no-op; the relay publishes in id order, so order per lifecycle
    holds. Returns how many rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE lifecycle_outboxmessage AS o SET published_at = NULL FROM lifecycle_lifecycle AS l "
            "WHERE o.published_at > now() - make_interval(secs => %s) AND o.key = l.id::text "
            "AND (l.status NOT IN ('completed', 'failed', 'cancelled') "
            "OR l.finished_at > now() - make_interval(secs => %s))",
            [within_s, finished_within_s],
        )
        return cursor.rowcount


def control_connection() -> psycopg.Connection:
    """The relay's own autocommit connection: it holds the leader lock for the life of the process (the
    lock goes with it if the process dies) and LISTENs for outbox commits."""
    conn = psycopg.connect(**db.connection_params(), autocommit=True)
    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
    return conn


def try_become_leader(conn: psycopg.Connection) -> bool:
    return bool(conn.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_ID]).fetchone()[0])


def wait_for_notify(conn: psycopg.Connection, timeout: float) -> None:
    """Wait up to ``timeout`` for a commit's NOTIFY, then take the others already here: the next claim
    covers every commit they announce, so each would otherwise cost a claim that finds nothing."""
    for _ in conn.notifies(timeout=timeout, stop_after=1):
        pass
    for _ in conn.notifies(timeout=0):
        pass


class LeadershipLost(Exception):
    """The control connection broke, and the leader lock with it."""


def serve(stop: GracefulExit, fan_out: LiveEvents | None = None) -> int:
    """Run the relay until ``stop``: lead (or stand by), publish, and ride out outages. Returns how many
    messages it published.

    1. Connect the control connection and take the leader lock, or stand by until it is free.
    2. Publish batches while there are any; otherwise wait for a commit's NOTIFY.
    3. A publish that fails is rolled back and tried again after a backoff. If the control connection is
       gone, so is the lock: go back to 1 before publishing again.
    """
    relay = Relay.create(fan_out)  # its producer reconnects by itself; one whose batch failed is replaced
    database, broker = Outage("relay: PostgreSQL", log), Outage("relay: Kafka", log)
    kafka.ensure_topics_when_available(stop)
    while not stop.requested:
        control = None
        try:
            control = control_connection()
            database.ok()
            standing_by = False
            while not try_become_leader(control):
                if not standing_by:
                    log.info("relay: another relay is leader; standing by")
                    standing_by = True
                if stop.wait(2.0):
                    return relay.published
            log.info("relay: leader, publishing")
            _lead(relay, control, stop, database, broker)
        except (psycopg.Error, LeadershipLost) as exc:
            stop.wait(database.failed(exc))
        finally:
            if control is not None:
                with contextlib.suppress(Exception):
                    control.close()
    relay.producer.flush(FLUSH_TIMEOUT_S)
    relay.close()
    return relay.published


def _lead(relay: Relay, control: psycopg.Connection, stop: GracefulExit, database: Outage, broker: Outage) -> None:
    last_prune = time.monotonic()
    while not stop.requested:
        liveness.beat()
        try:
            sent = relay.publish_pending()
        except Exception as exc:
            close_old_connections()
            if not _alive(control):
                raise LeadershipLost(str(exc)) from exc
            if not transient(exc) and not isinstance(exc, DeliveryFailed):
                log.exception("relay: publish failed; retrying")
            outage = broker if isinstance(exc, DeliveryFailed) else database
            stop.wait(outage.failed(exc))
            if outage is broker:
                # A broker that restarted empty has lost its topics too.
                with contextlib.suppress(Exception):
                    kafka.ensure_topics(timeout=2)
            continue
        database.ok()
        broker.ok()
        if sent < relay.batch_size:
            # The batch took every row committed before it was claimed; whatever commits later NOTIFYs on the
            # control connection, which holds the notice until it is read. So wait for that rather than ask
            # again (under light load, each batch would be followed by an empty claim and its rollback).
            try:
                wait_for_notify(control, IDLE_POLL_S)
            except psycopg.Error as exc:
                raise LeadershipLost(str(exc)) from exc
        if time.monotonic() - last_prune > PRUNE_EVERY_S:
            with contextlib.suppress(*TRANSIENT_DB):
                prune_published()
            last_prune = time.monotonic()


TRANSIENT_DB = (psycopg.Error, DjangoDatabaseError)


def _alive(control: psycopg.Connection) -> bool:
    try:
        control.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True
