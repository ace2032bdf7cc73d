"""The lifecycle's pipes, end to end through real processes: API → Postgres + outbox → relay → Kafka →
generator → Postgres, read back over the API."""

from __future__ import annotations

import pytest

from tests.processes import poll_until

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def get_lifecycle(api, lifecycle_id: str) -> dict:
    response = api.get(f"/v1/lifecycles/{lifecycle_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_echo_lifecycle_completes_through_kafka_and_the_generator(api):
    response = api.post("/v1/lifecycles", json={"model": "echo/demo", "prompt": "Hello, lifecycle"})

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "pending"
    assert accepted["ws_token"]
    assert accepted["links"]["self"].endswith(f"/v1/lifecycles/{accepted['id']}")

    final = poll_until(
        lambda: get_lifecycle(api, accepted["id"]),
        lambda body: body["status"] == "completed",
        timeout=60,
        what="completed",
    )
    assert final["output"] == "Hello, lifecycle"
    assert final["result"] == "Hello, lifecycle"
    assert final["model_used"] == "echo/demo"
    assert final["usage"] == {"input_tokens": 2, "output_tokens": 2, "cost_usd": 0.0}

    timeline = api.get(f"/v1/lifecycles/{accepted['id']}/timeline").json()
    events = [e["event"] for e in timeline["events"]]
    assert events == ["lifecycle.created", "lifecycle.generating", "generation.attempt", "lifecycle.completed"]
    assert [e["seq"] for e in timeline["events"]] == [1, 2, 3, 4]
