"""The bridge: a consumer group on ``lifecycle.events`` forwarding each event to the channel-layer groups of
the sockets that may see it. Routing uses the identity in the message headers, which only our own outbox
writes, never anything a client sent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import orjson
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from confluent_kafka import Consumer, KafkaError, Message

from lifecycle import kafka
from lifecycle.outbox import TOPIC_EVENTS
from orchestrator import logs, metrics
from orchestrator.process import GracefulExit
from realtime.consumers import FINAL_EVENTS, final_outcome, outcome_in
from realtime.groups import lifecycle_group, subscriber_group

log = logging.getLogger(__name__)

GROUP_ID = "realtime-bridge"


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
        self.consumer = Consumer(kafka.consumer_config(GROUP_ID))
        self.forwarded = 0

    async def _kafka(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.kafka_thread, fn, *args)

    async def run(self) -> int:
        await self._kafka(self.consumer.subscribe, [TOPIC_EVENTS])
        while not self.stop.requested:
            messages = await self._kafka(kafka.consume_available, self.consumer, 500, 0.1)
            for message in messages:
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("bridge: consume error: %s", message.error())
                    continue
                await self.forward(message)
            if messages:
                # Broadcasts are best-effort and idempotent (clients dedupe by seq; they catch up from the
                # database on reconnect), so commit after the batch is handed to the channel layer.
                await self._kafka(lambda: self.consumer.commit(asynchronous=True))
        await self._kafka(self.consumer.close)
        self.kafka_thread.shutdown()
        return self.forwarded

    async def _outcome(self, event: dict, group: str) -> dict:
        """A final event's outcome for the lifecycle's own group (subscriber streams carry no result): from
        the message itself, else read here once, rather than once per socket open on the lifecycle."""
        lifecycle_id = str(event["lifecycle_id"])
        if event.get("event") not in FINAL_EVENTS or group != lifecycle_group(lifecycle_id):
            return {}
        return {"outcome": outcome_in(event) or await database_sync_to_async(final_outcome)(lifecycle_id)}

    async def forward(self, message: Message) -> None:
        routed = routes(message)
        if routed is None:
            log.warning("bridge: skipping undecodable event at %s/%s", message.partition(), message.offset())
            return
        event, groups = routed
        headers = kafka.decode_headers(message.headers())
        logs.bind(
            lifecycle_id=event["lifecycle_id"],
            project_id=headers.get("project-id"),
            traceparent=headers.get("traceparent"),
        )
        message = {"type": "lifecycle.event", "event": {k: v for k, v in event.items() if k != "result"}}
        for group in groups:
            await self.layer.group_send(group, message | await self._outcome(event, group))
        self.forwarded += 1
        with contextlib.suppress(KeyError, ValueError):
            lag = (datetime.now(UTC) - datetime.fromisoformat(event["at"])).total_seconds()
            metrics.STEP_SECONDS.labels(step="broadcast").observe(max(0.0, lag))
