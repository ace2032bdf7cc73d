"""Kafka plumbing: client configuration, topic creation and header helpers. No business rules here.

The embedded broker (Tansu) has three quirks every client here respects: a consumer's first group join takes
~23 s unless ``session.timeout.ms`` is low; ``latest`` offsets are wrong, so groups start at ``earliest``;
and a fetch waits out ``fetch.wait.max.ms`` even when data arrives meanwhile, so with it the wait is short
(``KAFKA_FETCH_WAIT_MAX_MS``, set by the embedded stack).
"""

from __future__ import annotations

import asyncio
import logging
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from django.conf import settings

from lifecycle.outbox import TOPICS

log = logging.getLogger(__name__)


def _base_config() -> dict[str, str | int | bool]:
    return {"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS, **settings.KAFKA_CLIENT_CONFIG}


def producer_config(**overrides) -> dict:
    return {
        **_base_config(),
        # Idempotent: a retried send after a lost ack is written once, in order, per partition.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "none",
        **overrides,
    }


def consumer_config(group_id: str) -> dict:
    return {
        **_base_config(),
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "session.timeout.ms": settings.KAFKA_SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": max(1000, settings.KAFKA_SESSION_TIMEOUT_MS // 3),
        "fetch.wait.max.ms": settings.KAFKA_FETCH_WAIT_MAX_MS,
    }


def consume_available(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Wait up to ``timeout`` for a message, then take whatever else is already fetched, without waiting.
    (``Consumer.consume(n, timeout)`` returns early only once it has ``n`` messages: under light load it
    held every message for the whole timeout.)"""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]


class Idle:
    """A consumer that stops fetching while nothing comes, and fetches again when woken.

    After ``KAFKA_IDLE_AFTER_S`` with nothing consumed it pauses its partitions (they stay its own). Every
    message reaches Kafka through the outbox, whose trigger NOTIFYs ``outbox`` when the writing transaction
    commits, before the relay can publish the message: the owner listens for it and calls :meth:`wake`. A
    consumer also fetches every ``KAFKA_IDLE_CHECK_S``, in case a wake was missed (its listener reconnecting,
    a message published while it was deciding to sleep). Owners may hold the partitions paused themselves
    (the generator at capacity, :meth:`hold`): paused is held or asleep.

    :meth:`consume` and :meth:`hold` run on the thread that calls librdkafka; :meth:`doze` and :meth:`wake`
    on the owner's event loop."""

    AWAKE_AFTER_WAKE_S = 0.5  # long enough for the relay to publish what the NOTIFY announced
    AWAKE_AFTER_CHECK_S = 0.05  # one fetch

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.after = settings.KAFKA_IDLE_AFTER_S
        self.check = max(0.05, settings.KAFKA_IDLE_CHECK_S)
        self.asleep = self.held = self._paused = False
        self._last = time.monotonic()
        self._slept_at = self._woken_at = 0.0
        self._woken = asyncio.Event()
        # Where this consumer stands in each partition it was assigned (see _seek_in_place).
        self._positions: dict[tuple[str, int], int] = {}

    def forget(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions revoked (an ``on_revoke`` callback): their next owner decides where to read from."""
        for p in partitions:
            self._positions.pop((p.topic, p.partition), None)

    def consume(self, max_messages: int, timeout: float) -> list[Message]:
        messages = consume_available(self.consumer, max_messages, timeout)
        now = time.monotonic()
        if messages:
            self._last = now
            for message in messages:
                if not message.error():
                    self._positions[(message.topic(), message.partition())] = message.offset() + 1
        elif self.after and not self.asleep and now - self._last >= self.after:
            self.asleep, self._slept_at = True, now
            self._apply()
        return messages

    def hold(self, held: bool) -> None:
        self.held = held
        self._apply()

    def wake(self) -> None:
        self._woken_at = time.monotonic()
        self._woken.set()

    async def doze(self, on_kafka_thread) -> None:
        """While asleep, wait for a wake or the next check, then fetch again (``on_kafka_thread(fn)`` runs
        ``fn`` on the librdkafka thread)."""
        if not self.asleep:
            return
        woken = self._woken_at >= self._slept_at - self.AWAKE_AFTER_WAKE_S
        if not woken:
            self._woken.clear()
            try:
                await asyncio.wait_for(self._woken.wait(), self.check)
                woken = True
            except TimeoutError:
                pass
        await on_kafka_thread(lambda: self._awake(self.AWAKE_AFTER_WAKE_S if woken else self.AWAKE_AFTER_CHECK_S))

    def _awake(self, for_s: float) -> None:
        self.asleep = False
        self._last = time.monotonic() - self.after + for_s
        self._apply()

    def _apply(self) -> None:
        paused = self.held or self.asleep
        if paused == self._paused:
            return
        assignment = self.consumer.assignment()
        if assignment:
            if paused:
                self.consumer.pause(assignment)
            else:
                self.consumer.resume(assignment)
                self._seek_in_place(assignment)
        self._paused = paused

    def _seek_in_place(self, assignment: list[TopicPartition]) -> None:
        """librdkafka fetches a resumed partition only at its broker thread's next wake-up, up to a second
        later; a seek to where the consumer stands fetches at once. Where it stands: after the last message
        it consumed, or, in a partition it consumed nothing from since it was assigned it (so nothing of it
        is in flight here, and only this consumer commits it), at the committed offset, asked once."""
        untracked = [p for p in assignment if (p.topic, p.partition) not in self._positions]
        try:
            for p in self.consumer.committed(untracked, timeout=2) if untracked else []:
                if p.offset >= 0:
                    self._positions[(p.topic, p.partition)] = p.offset
            for p in assignment:
                offset = self._positions.get((p.topic, p.partition))
                if offset is not None:
                    self.consumer.seek(TopicPartition(p.topic, p.partition, offset))
        except KafkaException as exc:
            # The broker away, or a partition just revoked: librdkafka fetches anyway, at its own pace.
            log.info("kafka: could not seek resumed partitions in place: %s", exc)


def note_consume_error(error: KafkaError, outage, who: str) -> None:
    """What a consumer does with an error ``poll`` handed it: an end of partition is nothing, a broker away
    is the consumer's ``outage`` (logged once; librdkafka reconnects by itself), anything else a warning."""
    from orchestrator.outages import kafka_outage

    if error.code() == KafkaError._PARTITION_EOF:
        return
    if kafka_outage(error):
        outage.failed(error.str())
    else:
        log.warning("%s: consume error: %s", who, error)


def admin_client() -> AdminClient:
    return AdminClient(_base_config())


def ensure_topics(*, timeout: float = 10.0, partitions: int | None = None) -> None:
    """Create the service's topics if missing. Every process calls this on start: a broker that restarted
    empty (the embedded one keeps its log in memory) gets them back."""
    admin = admin_client()
    existing = admin.list_topics(timeout=timeout).topics
    missing = [
        NewTopic(
            topic,
            num_partitions=partitions or settings.KAFKA_TOPIC_PARTITIONS,
            replication_factor=settings.KAFKA_REPLICATION_FACTOR,
            # With replicas, an acknowledged write (acks=all) is on this many of them.
            config={"min.insync.replicas": str(settings.KAFKA_MIN_INSYNC_REPLICAS)}
            if settings.KAFKA_MIN_INSYNC_REPLICAS > 1
            else {},
        )
        for topic in TOPICS
        if topic not in existing
    ]
    if not missing:
        return
    for topic, future in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            future.result()
            log.info("created topic %s", topic)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise


def ensure_topics_when_available(stop) -> bool:
    """:func:`ensure_topics`, tried again with backoff while the broker is away (a process starting during
    a broker outage waits for it instead of exiting). Returns ``False`` if ``stop`` came first."""
    from orchestrator.outages import Outage

    outage = Outage("Kafka (creating topics)", log)
    while not stop.requested:
        try:
            ensure_topics(timeout=5)
        except KafkaException as exc:
            stop.wait(outage.failed(exc))
            continue
        outage.ok()
        return True
    return False


def ping(*, timeout: float = 2.0) -> None:
    """Raise unless the broker answers a metadata request."""
    admin_client().list_topics(timeout=timeout)


def encode_headers(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in headers.items()]


def decode_headers(raw: list[tuple[str, bytes]] | None) -> dict[str, str]:
    return {name: (value or b"").decode(errors="replace") for name, value in raw or []}
