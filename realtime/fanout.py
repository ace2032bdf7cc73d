"""Live events, from the relay: each lifecycle event the relay publishes to Kafka also goes, in the same pass,
to the channel-layer groups of the streams that may see it (sockets, event streams, waiting requests), one
pipeline of ``PUBLISH`` per batch. Routing uses the identity in the outbox row's headers, which only our
own outbox writes, never anything a client sent.

This was a process of its own, the bridge: a consumer group on ``lifecycle.events`` handing each event to
Redis. Every event then cost one more process a NOTIFY, a Kafka fetch, two thread hops and a Redis round
trip, and the broker one more consumer's fetches, and it waited up to a fetch (10 ms on the embedded
broker) on the way. The relay already holds each event, committed and in order per lifecycle (one relay
leads), so it hands it on itself. ``lifecycle.events`` is still published for any other consumer.

Best-effort, as the bridge's forwarding was: the live copy is how a stream learns of an event soonest,
never the only way. A stream that misses one (Redis away, a relay stopped between Kafka and Redis) fills
the gap from the database: at its next event (by ``seq``), when its process subscribes again after losing
Redis, and every ``REALTIME_RESYNC_S``. So the fan-out never holds the outbox up: one try waits at most
``TIMEOUT_S``, and while Redis is away it is not tried until its backoff has passed.

For the same reason it does not wait for Redis's answers: its connection is in ``CLIENT REPLY OFF`` mode, so
a batch is one ``send`` and no read. A server says nothing on such a connection unless it is going away, so
a connection with anything to read is dropped and a new one made before the next batch (what went out on it
meanwhile is what a stream fills from the database).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson
import redis
from channels.layers import get_channel_layer

from lifecycle.outbox import TOPIC_EVENTS
from orchestrator import metrics
from orchestrator.outages import Outage, transient
from realtime.groups import lifecycle_group, subscriber_group
from realtime.messages import FINAL_EVENTS, final_outcome, outcome_in

log = logging.getLogger(__name__)

TIMEOUT_S = 0.5
CLIENT_NAME = "relay-live-events"  # as CLIENT LIST shows its connection


def publications(event: dict, headers: dict[str, str]) -> list[tuple[str, dict]]:
    """The channel-layer messages one event makes: to the lifecycle's group, and to its subscriber's group
    when it has one. Only the lifecycle's own group gets a final event's outcome (subscriber streams carry
    no result), from the event itself or else read here once, rather than once per stream open on it."""
    lifecycle_id = str(event["lifecycle_id"])
    live = {"type": "lifecycle.event", "event": {k: v for k, v in event.items() if k != "result"}}
    outcome = {}
    if event.get("event") in FINAL_EVENTS:
        outcome = {"outcome": outcome_in(event) or final_outcome(lifecycle_id)}
    sends = [(lifecycle_group(lifecycle_id), live | outcome)]
    if headers.get("subscriber-user-id") and headers.get("project-id"):
        sends.append((subscriber_group(headers["project-id"], headers["subscriber-user-id"]), live))
    return sends


class FanOut:
    """Called by the relay with each batch it publishes: rows of ``(id, topic, key, payload, headers)``,
    the payload PostgreSQL's text of it."""

    def __init__(self, layer=None, timeout_s: float = TIMEOUT_S) -> None:
        self.layer = layer or get_channel_layer()
        # No retries of its own (the shared settings retry for seconds): a failed try waits for the backoff.
        self.pool = redis.ConnectionPool.from_url(
            self.layer.url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )
        self.connection: redis.connection.AbstractConnection | None = None
        self.outage = Outage("relay: live events to the realtime processes (Redis)", log)
        self.retry_at = 0.0
        self.sent = 0

    def __call__(self, rows: Iterable[tuple]) -> None:
        events = [(payload, headers) for _, topic, _, payload, headers in rows if topic == TOPIC_EVENTS]
        if not events or time.monotonic() < self.retry_at:
            return
        try:
            self._publish([(orjson.loads(payload), headers) for payload, headers in events])
        except Exception as exc:
            self.close()
            if not transient(exc) and not isinstance(exc, redis.RedisError | OSError):
                log.exception("relay: could not hand %d events to the realtime processes", len(events))
            self.retry_at = time.monotonic() + self.outage.failed(exc)
            return
        self.outage.ok()

    def _publish(self, events: list[tuple[dict, dict]]) -> None:
        commands = [
            ("PUBLISH", *self.layer.publication(group, message))
            for event, headers in events
            for group, message in publications(event, headers)
        ]
        connection = self._connection()
        connection.send_packed_command(connection.pack_commands(commands), check_health=False)
        self.sent += len(events)
        now = datetime.now(UTC)
        for event, _ in events:
            with contextlib.suppress(KeyError, ValueError, TypeError):
                lag = (now - datetime.fromisoformat(event["at"])).total_seconds()
                metrics.STEP_SECONDS.labels(step="broadcast").observe(max(0.0, lag))

    def _connection(self) -> redis.connection.AbstractConnection:
        if self.connection is not None:
            try:
                gone = self.connection.can_read(0)  # with replies off, the server says nothing but goodbye
            except (redis.ConnectionError, OSError):
                gone = True
            if gone:
                self.close()
        if self.connection is None:
            connection = self.pool.make_connection()
            connection.connect()
            connection.send_command("CLIENT", "SETNAME", CLIENT_NAME)
            connection.read_response()
            connection.send_command("CLIENT", "REPLY", "OFF")
            self.connection = connection
        return self.connection

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.disconnect()
            self.connection = None
