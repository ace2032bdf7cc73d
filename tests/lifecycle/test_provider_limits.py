"""Provider limits shared by every generator (lifecycle/limits.py): a provider's 429 with Retry-After pauses
that model for every generation, not only for the one that met it."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from tests.lifecycle.helpers import create, scripted, timeline, wait_status
from tests.processes import poll_until

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def attempts(api, lifecycle_id: str) -> list[dict]:
    return [e for e in timeline(api, lifecycle_id) if e["event"] == "generation.attempt"]


def started(event: dict) -> datetime:
    return datetime.fromisoformat(event["at"]) - timedelta(milliseconds=event["payload"]["latency_ms"])


def test_a_429_pauses_the_model_for_every_generation_until_its_retry_after(api):
    # The model answers its first call, then 429 with Retry-After: 2, then answers again.
    body = {"model": "openai/gpt-paused", "prompt": scripted(uuid.uuid4().hex, {"gpt-paused": ["ok", "429:2", "ok"]})}
    assert wait_status(api, create(api, body)["id"])["status"] == "completed"
    limited = create(api, body)
    (refused,) = poll_until(
        lambda: attempts(api, limited["id"]), lambda found: len(found) == 1, timeout=20, what="the 429"
    )
    assert refused["payload"]["http_status"] == 429

    other = create(api, body)  # another generation of the same model, while the pause lasts

    assert wait_status(api, other["id"])["status"] == "completed"
    assert wait_status(api, limited["id"])["status"] == "completed"
    (first_call,) = attempts(api, other["id"])
    # It did not call the model until the pause was over (2 s after the 429, with some clock slack).
    assert started(first_call) >= datetime.fromisoformat(refused["at"]) + timedelta(seconds=1.5)
