"""lifecycle.events carries every step, so another consumer can follow lifecycles without touching this code."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from confluent_kafka import Consumer

from lifecycle import kafka
from lifecycle.outbox import TOPIC_EVENTS
from tests.lifecycle.helpers import create, timeline, wait_status

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def consume_lifecycle_events(lifecycle_id: str, until_event: str, timeout: float = 30) -> list:
    consumer = Consumer(kafka.consumer_config(f"interested-party-{uuid.uuid4().hex}"))
    consumer.subscribe([TOPIC_EVENTS])
    seen = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() or message.key().decode() != lifecycle_id:
                continue
            seen.append(message)
            if orjson.loads(message.value())["event"] == until_event:
                return seen
    finally:
        consumer.close()
    raise AssertionError(f"{until_event} not seen in {timeout}s; saw {[orjson.loads(m.value()) for m in seen]}")


def test_an_interested_party_sees_every_timeline_event_in_order_with_trusted_headers(api):
    lifecycle = create(
        api,
        {
            "model": "echo/x",
            "prompt": "watch me",
            "subscriber": {"user_id": "u-7", "tier": "free"},
            "metadata": {"k": "v"},
        },
    )
    wait_status(api, lifecycle["id"])

    messages = consume_lifecycle_events(lifecycle["id"], "lifecycle.completed")

    bodies = [orjson.loads(m.value()) for m in messages]
    assert [b["seq"] for b in bodies] == [e["seq"] for e in timeline(api, lifecycle["id"])]
    assert [b["event"] for b in bodies] == [e["event"] for e in timeline(api, lifecycle["id"])]
    assert bodies[-1]["status"] == "completed"
    assert bodies[-1]["result"] == "watch me"  # the final event carries a small result
    assert all("result" not in b for b in bodies[:-1])
    assert all(b["metadata"] == {"k": "v"} for b in bodies)
    headers = kafka.decode_headers(messages[-1].headers())
    assert headers["event-type"] == "lifecycle.completed"
    assert headers["project-id"] == str(api.project.id)
    assert headers["subscriber-user-id"] == "u-7"
    assert headers["subscriber-tier"] == "free"
    assert headers["traceparent"].startswith("00-")


def test_a_relay_killed_and_restarted_publishes_what_was_committed_meanwhile(api, stack):
    stack.kill("relay")
    try:
        lifecycle = create(api, {"model": "echo/x", "prompt": "queued in the outbox"})
        time.sleep(1)
        assert wait_status(api, lifecycle["id"], {"pending"})["status"] == "pending"
    finally:
        stack.start("relay")

    final = wait_status(api, lifecycle["id"], timeout=30)

    assert final["status"] == "completed"
    assert [e["event"] for e in timeline(api, lifecycle["id"])][-1] == "lifecycle.completed"
