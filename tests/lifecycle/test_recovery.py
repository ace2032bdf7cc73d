"""Nothing is lost when a Kafka message goes missing, a message is poison, or a generator dies."""

from __future__ import annotations

import pytest
from django.conf import settings

from lifecycle import outbox
from lifecycle.models import OutboxMessage
from tests.lifecycle.factories import lifecycle_with_lost_request
from tests.lifecycle.helpers import create, timeline, wait_status

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def events(api, lifecycle_id) -> list[str]:
    return [e["event"] for e in timeline(api, lifecycle_id)]


def test_the_reconciler_redrives_a_lifecycle_whose_kafka_message_was_lost(api):
    lifecycle = lifecycle_with_lost_request(api.project)

    final = wait_status(api, str(lifecycle.id), timeout=30)

    assert final["status"] == "completed"
    assert final["output"] == "hello"
    assert events(api, lifecycle.id) == [
        "lifecycle.created",
        "lifecycle.redriven",
        "lifecycle.generating",
        "generation.attempt",
        "lifecycle.completed",
    ]


def test_a_generator_killed_mid_generation_loses_nothing(api, stack):
    lifecycle = create(api, {"model": "echo/slow", "prompt": "survive", "params": {"latency_ms": 2000}})
    wait_status(api, lifecycle["id"], {"generating"})

    stack.kill("generator")
    stack.start("generator")
    final = wait_status(api, lifecycle["id"], timeout=settings.GENERATION_LEASE_S + 40)

    assert final["status"] == "completed"
    assert final["output"] == "survive"
    names = events(api, lifecycle["id"])
    assert "generation.reclaimed" in names
    assert names[-1] == "lifecycle.completed"
    assert names.count("lifecycle.completed") == 1


def test_a_poison_request_goes_to_the_dlq_and_its_lifecycle_fails_cleanly(api):
    lifecycle = lifecycle_with_lost_request(api.project)
    # A message no generator can decode, about a real lifecycle (a buggy producer, a schema change...).
    outbox.enqueue(
        topic=outbox.TOPIC_REQUESTS,
        key=str(lifecycle.id),
        event_type="generation.requested",
        headers={"event-type": "generation.requested"},
        payload={"not": "a generation request"},
    )

    final = wait_status(api, str(lifecycle.id), timeout=30)

    assert final["status"] == "failed"
    assert final["error"]["code"] == "generation_failed"
    assert "undecodable" in final["error"]["details"]["reason"]
    parked = OutboxMessage.objects.get(topic=outbox.TOPIC_DLQ, key=str(lifecycle.id))
    assert parked.payload["source_topic"] == outbox.TOPIC_REQUESTS
    assert "undecodable" in parked.headers["dlq-reason"]
