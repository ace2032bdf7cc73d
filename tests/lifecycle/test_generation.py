"""Generation through the real stack against a real fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.lifecycle.helpers import create, get, scripted, timeline, wait_status
from tests.processes import poll_until

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def scenario() -> str:
    return uuid.uuid4().hex


def attempts(api, lifecycle_id: str) -> list[dict]:
    return [e["payload"] for e in timeline(api, lifecycle_id) if e["event"] == "generation.attempt"]


def test_a_429_with_retry_after_is_retried_and_then_completes(api):
    prompt = scripted(scenario(), {"gpt-fake": ["429:1", "ok"]}, reply="second time lucky")

    lifecycle = create(api, {"model": "openai/gpt-fake", "prompt": prompt})
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "completed", final
    assert final["output"] == "second time lucky"
    assert final["usage"] == {"input_tokens": 7, "output_tokens": 3, "cost_usd": None}  # unpriced
    tried = attempts(api, lifecycle["id"])
    assert [(a["outcome"], a["http_status"]) for a in tried] == [("error", 429), ("ok", 200)]
    assert tried[0]["retryable"] is True
    assert all(a["latency_ms"] >= 0 for a in tried)


def test_repeated_500s_exhaust_retries_then_the_fallback_answers(api):
    prompt = scripted(scenario(), {"primary": ["500"], "backup": ["ok"]}, reply="from backup")

    lifecycle = create(api, {"model": "openai/primary", "prompt": prompt, "fallbacks": ["openai/backup"]})
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "completed", final
    assert final["model_used"] == "openai/backup"
    tried = attempts(api, lifecycle["id"])
    assert [(a["model"], a["http_status"]) for a in tried] == [
        ("openai/primary", 500),
        ("openai/primary", 500),
        ("openai/primary", 500),
        ("openai/backup", 200),
    ]


@pytest.mark.parametrize(
    "fault, said",
    [("hang:5", "timed out after "), ("drop", "connection failed: ")],
    ids=["hangs past the timeout", "drops the connection"],
)
def test_a_provider_that_answers_nothing_is_retried_and_the_attempt_says_how_it_failed(api, fault, said):
    prompt = scripted(scenario(), {"flaky": [fault, "ok"]}, reply="second time lucky")

    lifecycle = create(api, {"model": "openai/flaky", "prompt": prompt})
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "completed", final
    first, second = attempts(api, lifecycle["id"])
    assert first["error"].startswith(said), first
    assert first["retryable"] is True
    assert second["outcome"] == "ok"


def test_when_every_model_fails_the_lifecycle_fails_with_generation_failed(api):
    prompt = scripted(scenario(), {"a": ["500"], "b": ["garbage"]})

    lifecycle = create(api, {"model": "openai/a", "prompt": prompt, "fallbacks": ["openai/b"]})
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "failed"
    assert final["error"]["code"] == "generation_failed"
    assert final["error"]["step"] == "generation"
    assert "openai/b" in final["error"]["details"]["last_error"]
    assert timeline(api, lifecycle["id"])[-1]["event"] == "lifecycle.failed"


def test_a_request_the_provider_refuses_is_not_retried_and_fails_as_invalid_request(api):
    prompt = scripted(scenario(), {"strict": ["400"]})

    lifecycle = create(api, {"model": "openai/strict", "prompt": prompt})
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "failed"
    assert final["error"]["code"] == "invalid_request"
    assert len(attempts(api, lifecycle["id"])) == 1


SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "schema": {
            "type": "object",
            "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
            "required": ["label", "score"],
            "additionalProperties": False,
        },
    },
}


def test_structured_output_that_matches_the_schema_is_stored_as_an_object(api):
    prompt = scripted(scenario(), {"json": ["ok"]}, reply='{"label": "spam", "score": 0.97}')

    lifecycle = create(api, {"model": "openai/json", "prompt": prompt, "response_format": SCHEMA})
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "completed", final
    assert final["output"] == {"label": "spam", "score": 0.97}


def test_structured_output_that_breaks_the_schema_fails_with_output_invalid(api):
    prompt = scripted(scenario(), {"json": ["ok"]}, reply='{"label": "spam"}')

    lifecycle = create(api, {"model": "openai/json", "prompt": prompt, "response_format": SCHEMA})
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "failed"
    assert final["error"]["code"] == "output_invalid"
    assert "score" in final["error"]["message"]


def test_cancelling_during_generation_abandons_it_and_ignores_the_late_result(api):
    lifecycle = create(api, {"model": "echo/slow", "prompt": "never mind", "params": {"latency_ms": 2500}})
    wait_status(api, lifecycle["id"], {"generating"})

    response = api.post(f"/v1/lifecycles/{lifecycle['id']}/cancel")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["error"]["code"] == "cancelled"
    # The generator abandons the generation at once, well before the model would have answered.
    abandoned = poll_until(
        lambda: [e["event"] for e in timeline(api, lifecycle["id"])],
        lambda names: "generation.abandoned" in names,
        timeout=2,
        what="generation.abandoned",
    )
    assert "generation.attempt" not in abandoned
    time.sleep(3)  # past the model's latency: nothing more lands
    final = get(api, lifecycle["id"])
    assert final["status"] == "cancelled"
    assert final["output"] is None
    assert "lifecycle.completed" not in [e["event"] for e in timeline(api, lifecycle["id"])]


def test_cancelling_a_finished_lifecycle_is_a_conflict(api):
    lifecycle = create(api, {"model": "echo/x", "prompt": "done"})
    wait_status(api, lifecycle["id"])

    response = api.post(f"/v1/lifecycles/{lifecycle['id']}/cancel")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_anthropic_models_speak_the_messages_api_with_retries(api):
    prompt = scripted(scenario(), {"claude-fake": ["529", "ok"]}, reply="bonjour")

    lifecycle = create(
        api,
        {
            "model": "anthropic/claude-fake",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
        },
    )
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "completed", final
    assert final["output"] == "bonjour"
    assert final["usage"] == {"input_tokens": 11, "output_tokens": 5, "cost_usd": None}
    assert [a["http_status"] for a in attempts(api, lifecycle["id"])] == [529, 200]
