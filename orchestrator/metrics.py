"""Prometheus metrics, served at ``GET /metrics`` by the web process.

Counters and histograms are observed where things happen (web, generator, relay, Celery workers). With
``PROMETHEUS_MULTIPROC_DIR`` set (``make dev`` and the tests set it), every process on the host writes its
samples there and ``/metrics`` adds them up. Gauges that describe the whole system (lifecycles in each
live status, outbox backlog, due deliveries, consumer lag) are read from the database and Kafka at scrape
time, so they are right whichever process serves the scrape.
"""

from __future__ import annotations

import logging
import os
import time

from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)

ACCEPTED = Counter("lifecycle_accepted", "Lifecycles accepted by the API.")
TRANSITIONS = Counter("lifecycle_transitions", "Lifecycle status changes, by the status entered.", ["status"])
STEP_SECONDS = Histogram(
    "lifecycle_step_seconds",
    "Time spent in each step: queue_wait (pending), model (generating), webhook_delivery (delivering), "
    "backend_callback (awaiting_callback), broadcast (event to socket group), end_to_end (created to final).",
    ["step"],
    buckets=STEP_BUCKETS,
)
GENERATIONS_WAITING = Gauge(
    "generations_waiting",
    "Generation requests a generator consumed and holds until a slot is free, per project and tier.",
    ["project", "tier"],
    multiprocess_mode="livesum",
)
GENERATION_WAIT_SECONDS = Histogram(
    "generation_wait_seconds",
    "From accept to the claim of the generation, per subscriber tier.",
    ["tier"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
GENERATION_HOLDS = Counter(
    "generation_holds_total",
    "Generations held back before their claim: the model paused (a 429) or at its configured limit "
    "(limited), or the project at its in-flight cap (capped).",
    ["reason"],
)
PROVIDER_PAUSED_SECONDS = Histogram(
    "provider_paused_seconds",
    "How long a generation waited for its model's pause (a provider's 429) to end, per model.",
    ["model"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PROVIDER_ATTEMPTS = Counter("provider_attempts", "Provider calls, by provider and outcome.", ["provider", "outcome"])
WEBHOOK_ATTEMPTS = Counter("webhook_attempts", "Webhook attempts, by HTTP status class or failure.", ["status_class"])
WEBSOCKETS = Gauge("websocket_connections", "Open lifecycle WebSockets.", multiprocess_mode="livesum")
EVENT_STREAMS = Gauge(
    "event_streams", "Open Server-Sent Event streams (GET /v1/lifecycles/{id}/events).", multiprocess_mode="livesum"
)
REALTIME_DROPPED = Counter(
    "realtime_messages_dropped", "Live messages dropped for a socket whose queue was full (it catches up by seq)."
)

# The step a lifecycle leaves when it moves out of each status.
STEP_OF_STATUS = {
    "pending": "queue_wait",
    "generating": "model",
    "delivering": "webhook_delivery",
    "awaiting_callback": "backend_callback",
}


def status_class(status_code: int | None, outcome: str) -> str:
    if outcome == "refused":
        return "refused"
    if status_code is None:
        return "error"
    return f"{status_code // 100}xx"


class SystemCollector:
    """Gauges read at scrape time from the database and Kafka."""

    LAG_CACHE_S = 5.0

    def __init__(self) -> None:
        self._lag: tuple[float, list] = (0.0, [])

    def collect(self):
        from django.db.models import Count

        from lifecycle.models import Lifecycle, OutboxMessage
        from lifecycle.states import ACTIVE
        from webhooks.models import Delivery, DeliveryStatus

        live = GaugeMetricFamily("lifecycles_live", "Lifecycles in each non-terminal status.", labels=["status"])
        counts = dict(
            Lifecycle.objects.filter(status__in=ACTIVE)
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
        for status in sorted(ACTIVE):
            live.add_metric([status], counts.get(status, 0))
        yield live
        yield GaugeMetricFamily(
            "generations_in_flight", "Lifecycles being generated now.", value=counts.get("generating", 0)
        )
        yield GaugeMetricFamily(
            "outbox_backlog", "Outbox rows not yet published to Kafka.",
            value=OutboxMessage.objects.filter(published_at__isnull=True).count(),
        )  # fmt: skip
        waiting = Delivery.objects.filter(status=DeliveryStatus.PENDING)
        yield GaugeMetricFamily(
            "webhook_deliveries_waiting", "Deliveries waiting for an attempt.", value=waiting.count()
        )
        yield GaugeMetricFamily(  # what the delivery workers scale on (deploy/kubernetes/components/keda)
            "webhook_deliveries_due", "Deliveries whose attempt is due now.",
            value=waiting.filter(next_attempt_at__lte=timezone.now()).count(),
        )  # fmt: skip
        lag = GaugeMetricFamily(
            "kafka_consumer_lag", "Messages not yet consumed, per group and topic.", labels=["group", "topic"]
        )
        for group, topic, value in self._consumer_lag():
            lag.add_metric([group, topic], value)
        yield lag

    def _consumer_lag(self) -> list[tuple[str, str, int]]:
        fetched_at, cached = self._lag
        if time.monotonic() - fetched_at < self.LAG_CACHE_S:
            return cached
        try:
            lag = consumer_lag()
        except Exception as exc:  # the scrape must work with the broker down
            log.warning("metrics: consumer lag unavailable: %s", exc)
            lag = []
        self._lag = (time.monotonic(), lag)
        return lag


def consumer_lag(timeout: float = 2.0) -> list[tuple[str, str, int]]:
    """(group, topic, lag) for the service's consumer groups: high watermark minus committed offset.
    (The embedded broker's watermarks count batches, so its figures are indicative only.)"""
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition

    from lifecycle import kafka
    from lifecycle.generator import GROUP_ID as GENERATORS
    from lifecycle.outbox import TOPIC_REQUESTS

    admin = kafka.admin_client()
    metadata = admin.list_topics(timeout=timeout)
    group, topic = GENERATORS, TOPIC_REQUESTS  # the one consumer group (live events go out from the relay)
    if topic not in metadata.topics:
        return []
    partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
    request = [ConsumerGroupTopicPartitions(group, partitions)]
    committed = admin.list_consumer_group_offsets(request, request_timeout=timeout)[group].result()
    probe = Consumer(kafka.consumer_config("metrics-probe"))
    try:
        total = 0
        for tp in committed.topic_partitions:
            _, high = probe.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout)
            total += max(0, high - max(tp.offset, 0))
    finally:
        probe.close()
    return [(group, topic, total)]


class _ThisProcess:
    """Without a multiprocess folder, this process's own samples."""

    def collect(self):
        yield from REGISTRY.collect()


_system = SystemCollector()


def render() -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(_system)
    return generate_latest(registry)
