"""The relay's live events (realtime/fanout.py) against the embedded Redis, received by a channel layer as a
realtime process would: each event to its lifecycle's group and its subscriber's, a final one with its
outcome, and never a hold-up of the relay while Redis is away."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
import redis
from django.conf import settings

from lifecycle.models import Lifecycle
from lifecycle.outbox import TOPIC_EVENTS, TOPIC_REQUESTS
from orchestrator.embedded import free_port
from realtime.fanout import CLIENT_NAME, FanOut
from realtime.groups import lifecycle_group, subscriber_group
from realtime.layer import FanOutLayer
from tests.conftest import make_project
from tests.realtime.test_layer import a_layer


def row(topic: str, event: dict, headers: dict[str, str] | None = None) -> tuple:
    """An outbox row as the relay claims it: id, topic, key, PostgreSQL's text of the payload, headers."""
    return (1, topic, event.get("lifecycle_id", ""), json.dumps(event), headers or {})


def event(lifecycle_id: str, seq: int, name: str, **extra) -> dict:
    at = "2026-12-07T00:00:00+00:00"
    return {"lifecycle_id": lifecycle_id, "seq": seq, "event": name, "at": at, "data": {}} | extra


def received(
    layer: FanOutLayer, groups: list[str], rows: list[tuple], fan_out: FanOut | None = None
) -> list[list[dict]]:
    """What a realtime process's sockets in each of ``groups`` get when the relay fans ``rows`` out."""

    async def scenario() -> list[list[dict]]:
        channels = [await layer.new_channel() for _ in groups]
        for group, channel in zip(groups, channels, strict=True):
            await layer.group_add(group, channel)
        await asyncio.to_thread(fan_out or FanOut(layer), rows)
        got = []
        for channel in channels:
            messages = []
            while True:
                try:
                    messages.append(await asyncio.wait_for(layer.receive(channel), 0.5))
                except TimeoutError:
                    break
            got.append(messages)
        await layer.flush()
        return got

    return asyncio.run(scenario())


def test_each_event_reaches_its_lifecycles_group_and_its_subscribers_and_nothing_else_goes():
    lifecycle_id, project_id = str(uuid.uuid4()), str(uuid.uuid4())
    identity = {"project-id": project_id, "subscriber-user-id": "user-7"}
    rows = [
        row(TOPIC_REQUESTS, {"lifecycle_id": lifecycle_id}),  # not an event: Kafka's only
        row(TOPIC_EVENTS, event(lifecycle_id, 2, "lifecycle.generating"), identity),
        row(TOPIC_EVENTS, event(lifecycle_id, 3, "lifecycle.completed", result={"answer": 42}), identity),
    ]
    mine, subscribers = received(
        a_layer(), [lifecycle_group(lifecycle_id), subscriber_group(project_id, "user-7")], rows
    )

    assert [m["event"]["seq"] for m in mine] == [2, 3]  # in order
    assert all(m["type"] == "lifecycle.event" and "result" not in m["event"] for m in mine + subscribers)
    assert "outcome" not in mine[0]
    assert mine[1]["outcome"] == {"result": {"answer": 42}}  # from the message: no database read
    assert [m["event"]["seq"] for m in subscribers] == [2, 3]
    assert all("outcome" not in m for m in subscribers)  # subscriber streams carry no result


@pytest.mark.django_db(transaction=True)  # the relay reads it on a connection of its own
def test_a_result_too_big_for_the_message_is_read_once_and_a_failure_goes_as_a_friendly_error():
    project, _ = make_project()
    big = Lifecycle.objects.create(
        project=project, model="echo/x", messages=[], status="completed", result={"text": "x" * 100_000}
    )
    failed_id = str(uuid.uuid4())
    error = {"code": "provider_error", "message": "No answer.", "details": "10.0.0.7 answered 500"}
    rows = [
        row(TOPIC_EVENTS, event(str(big.id), 3, "lifecycle.completed")),
        row(TOPIC_EVENTS, event(failed_id, 3, "lifecycle.failed", data={"error": error})),
    ]
    (completed,), (failed,) = received(a_layer(), [lifecycle_group(str(big.id)), lifecycle_group(failed_id)], rows)

    assert completed["outcome"] == {"result": {"text": "x" * 100_000}}
    # Nothing internal reaches an end user: code, message and step only.
    assert failed["outcome"] == {"error": {"code": "provider_error", "message": "No answer.", "step": None}}


def test_a_connection_redis_dropped_is_replaced_before_the_next_batch():
    """Its connection never reads an answer (replies are off), so it has to notice a closed one itself."""
    layer = a_layer()
    fan_out = FanOut(layer)
    lifecycle_id = str(uuid.uuid4())
    first = row(TOPIC_EVENTS, event(lifecycle_id, 1, "lifecycle.created"))
    assert len(received(layer, [lifecycle_group(lifecycle_id)], [first], fan_out)[0]) == 1
    admin = redis.Redis.from_url(settings.REDIS_URL)
    killed = [admin.client_kill_filter(_id=c["id"]) for c in admin.client_list() if c["name"] == CLIENT_NAME]
    assert killed, "the fan-out's connection is named in CLIENT LIST"

    then = row(TOPIC_EVENTS, event(lifecycle_id, 2, "lifecycle.generating"))
    (messages,) = received(layer, [lifecycle_group(lifecycle_id)], [then], fan_out)
    assert [m["event"]["seq"] for m in messages] == [2]
    assert not fan_out.outage.ongoing


def test_while_redis_is_away_the_fan_out_gives_up_at_once_and_backs_off_without_trying():
    away = FanOut(FanOutLayer(url=f"redis://127.0.0.1:{free_port()}/0"), timeout_s=0.5)
    rows = [row(TOPIC_EVENTS, event(str(uuid.uuid4()), 1, "lifecycle.created"))]

    started = time.monotonic()
    away(rows)  # refused: no exception for the relay, whose Kafka flush goes on
    first = time.monotonic() - started
    assert away.outage.ongoing
    started = time.monotonic()
    for _ in range(100):
        away(rows)
    again = time.monotonic() - started

    assert first < 1.0
    assert again < 0.05, "while backing off, a batch must not wait on Redis"
    assert away.sent == 0
