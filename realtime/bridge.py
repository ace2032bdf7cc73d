"""The bridge: a consumer group on ``lifecycle.events`` forwarding each event to the channel-layer groups of
the sockets that may see it, a consumed batch at a time in one Redis round trip. Routing uses the identity
in the message headers, which only our own outbox writes, never anything a client sent.

Offsets: once a batch of events is handed to the channel layer, the offset after each partition's last one
is stored; librdkafka commits what is stored every ``COMMIT_EVERY_MS`` (and on a rebalance), and the bridge
commits once more, waiting, when it stops. So a restart or a deploy resumes where the bridge stopped instead
of replaying the topic, and a crash replays at most a second of events, which sockets drop by their
``seq``. While Redis (or PostgreSQL, for a big result) is away the bridge waits on the batch in
hand and goes on when it is back: lag builds meanwhile, and sockets catch up from the database anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import orjson
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from lifecycle import kafka, outbox
from lifecycle.outbox import TOPIC_EVENTS
from orchestrator import db, liveness, metrics
from orchestrator.outages import Outage, transient
from orchestrator.process import GracefulExit
from realtime.groups import lifecycle_group, subscriber_group
from realtime.messages import FINAL_EVENTS, final_outcome, outcome_in

log = logging.getLogger(__name__)

GROUP_ID = "realtime-bridge"
# Not a commit per batch: at a few lifecycles a second every batch is one event, and each commit was one more
# request for the broker to answer.
COMMIT_EVERY_MS = 1000


def routes(message: Message) -> tuple[dict, list[str]] | None:
    """The event and the groups it goes to; ``None`` for a message that is not a lifecycle event."""
    try:
        event = orjson.loads(message.value() or b"")
        lifecycle_id = str(event["lifecycle_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    headers = kafka.decode_headers(message.headers())
    groups = [lifecycle_group(lifecycle_id)]
    if headers.get("subscriber-user-id") and headers.get("project-id"):
        groups.append(subscriber_group(headers["project-id"], headers["subscriber-user-id"]))
    return event, groups


class Bridge:
    def __init__(self, *, stop: GracefulExit) -> None:
        self.stop = stop
        self.layer = get_channel_layer()
        self.kafka_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka")
        self.consumer = Consumer(
            kafka.consumer_config(GROUP_ID, **{"enable.auto.commit": True, "auto.commit.interval.ms": COMMIT_EVERY_MS})
        )
        self.idle = kafka.Idle(self.consumer)
        self.forwarded = 0
        self.broker = Outage("bridge: Kafka", log)
        self.layer_outage = Outage("bridge: channel layer (Redis) or PostgreSQL", log)

    async def _kafka(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.kafka_thread, fn, *args)

    async def run(self) -> int:
        await self._kafka(lambda: self.consumer.subscribe([TOPIC_EVENTS], on_revoke=self.idle.forget))
        listener = asyncio.create_task(db.listen({outbox.NOTIFY_CHANNEL: lambda _: self.idle.wake()}, "bridge"))
        handed_on: dict[tuple[str, int], int] = {}
        while not self.stop.requested:
            liveness.beat()
            await self.idle.doze(self._kafka)
            messages = await self._kafka(self._store_then_consume, handed_on)
            handed_on = {}
            events = []
            for message in messages:
                if message.error():
                    kafka.note_consume_error(message.error(), self.broker, "bridge")
                    continue
                self.broker.ok()
                events.append(message)
            if not events:
                continue
            if not await self._forward_patiently(events):
                break  # stopping: what was not handed on is not stored, so the next bridge sends it
            # Broadcasts are best-effort and idempotent (clients dedupe by seq; they catch up from the database
            # on reconnect), so the offsets are stored once the batch is handed to the channel layer (on the
            # Kafka thread's next trip, which fetches the next batch too).
            handed_on = {(message.topic(), message.partition()): message.offset() + 1 for message in events}
        listener.cancel()
        await self._kafka(self._store_then_commit, handed_on)  # waits: the next bridge resumes from here
        await self._kafka(self.consumer.close)
        self.kafka_thread.shutdown()
        return self.forwarded

    def _store_then_consume(self, handed_on: dict[tuple[str, int], int]) -> list[Message]:
        self._store(handed_on)
        return self.idle.consume(500, 0.1)

    def _store(self, handed_on: dict[tuple[str, int], int]) -> None:
        if not handed_on:
            return
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in handed_on.items()]
        try:
            self.consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:  # a partition revoked meanwhile: its new owner reads from the last commit
            self.broker.failed(exc)

    def _store_then_commit(self, handed_on: dict[tuple[str, int], int]) -> None:
        """On the way out: commit what was handed on, waiting for the broker's answer."""
        self._store(handed_on)
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:  # nothing stored since the last commit
                self.broker.failed(exc)

    async def _forward_patiently(self, messages: list[Message]) -> bool:
        """Forward ``messages``, waiting out an outage of Redis or PostgreSQL. ``False`` if stopped first."""
        while True:
            try:
                await self.forward(messages)
            except Exception as exc:
                if not transient(exc):
                    # No server is away: a bug, or events no socket can take. Skip them rather than stop.
                    log.exception("bridge: could not forward %d events from %s", len(messages), _where(messages[0]))
                    return True
                await asyncio.sleep(self.layer_outage.failed(exc))
                if self.stop.requested:
                    return False
                continue
            self.layer_outage.ok()
            return True

    async def _outcome(self, event: dict, group: str) -> dict:
        """A final event's outcome for the lifecycle's own group (subscriber streams carry no result): from
        the message itself, else read here once, rather than once per socket open on the lifecycle."""
        lifecycle_id = str(event["lifecycle_id"])
        if event.get("event") not in FINAL_EVENTS or group != lifecycle_group(lifecycle_id):
            return {}
        return {"outcome": outcome_in(event) or await database_sync_to_async(final_outcome)(lifecycle_id)}

    async def forward(self, messages: list[Message]) -> None:
        """Hand a batch of events to the channel layer in one round trip (whatever a final event's outcome
        needs from the database is read first)."""
        sends: list[tuple[str, dict]] = []
        forwarded: list[dict] = []
        for message in messages:
            try:
                routed = routes(message)
                if routed is None:
                    log.warning("bridge: skipping undecodable event at %s", _where(message))
                    continue
                event, groups = routed
                live = {"type": "lifecycle.event", "event": {k: v for k, v in event.items() if k != "result"}}
                for group in groups:
                    sends.append((group, live | await self._outcome(event, group)))
            except Exception as exc:
                if transient(exc):
                    raise
                log.exception("bridge: skipping the event at %s, which could not be routed", _where(message))
                continue
            forwarded.append(event)
        if sends:
            await self.layer.group_send_many(sends)
        self.forwarded += len(forwarded)
        now = datetime.now(UTC)
        for event in forwarded:
            with contextlib.suppress(KeyError, ValueError, TypeError):
                lag = (now - datetime.fromisoformat(event["at"])).total_seconds()
                metrics.STEP_SECONDS.labels(step="broadcast").observe(max(0.0, lag))


def _where(message: Message) -> str:
    return f"{message.topic()}/{message.partition()}/{message.offset()}"
