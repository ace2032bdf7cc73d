"""Kafka plumbing: client configuration, topic creation and header helpers. No business rules here.

The embedded broker (Tansu) has three quirks every client here respects: a consumer's first group join takes
~23 s unless ``session.timeout.ms`` is low; ``latest`` offsets are wrong, so groups start at ``earliest``;
and a fetch waits out ``fetch.wait.max.ms`` even when data arrives meanwhile, so with it the wait is short
(``KAFKA_FETCH_WAIT_MAX_MS``, set by the embedded stack).
"""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
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


def consumer_config(group_id: str, **overrides) -> dict:
    return {
        **_base_config(),
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "session.timeout.ms": settings.KAFKA_SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": max(1000, settings.KAFKA_SESSION_TIMEOUT_MS // 3),
        "fetch.wait.max.ms": settings.KAFKA_FETCH_WAIT_MAX_MS,
        **overrides,
    }


def consume_available(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Wait up to ``timeout`` for a message, then take whatever else is already fetched, without waiting.
    (``Consumer.consume(n, timeout)`` returns early only once it has ``n`` messages: under light load it
    held every message for the whole timeout.)"""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]


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
