"""Idle consumers stop fetching (kafka.Idle) and the outbox wakes them: the first lifecycle after a quiet
spell goes through as fast as any other, without waiting for the periodic check."""

from __future__ import annotations

import time

import pytest

from tests.lifecycle.helpers import create, timeline
from tests.realtime.helpers import collect

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

MODEL_S = 4.0  # longer than KAFKA_IDLE_AFTER_S: the generator falls asleep again while the model runs


def test_after_a_quiet_spell_the_generator_wakes_for_the_next_lifecycle(api, stack):
    idle_after = float(stack.env["KAFKA_IDLE_AFTER_S"])
    check = float(stack.env["KAFKA_IDLE_CHECK_S"])
    assert check > MODEL_S + 3, "a missed wake must be told from a slow run"
    time.sleep(idle_after + 1)  # every consumer of the stack is asleep now

    started = time.monotonic()
    lifecycle = create(api, {"model": "echo/x", "prompt": "wake up", "params": {"latency_ms": MODEL_S * 1000}})
    messages, close_code = collect(f"{lifecycle['links']['websocket']}?token={lifecycle['ws_token']}")
    took = time.monotonic() - started

    assert messages[-1]["event"] == "lifecycle.completed"
    assert messages[-1]["result"] == "wake up"
    assert close_code == 1000
    # The generator claimed it at once (woken by the accept's NOTIFY), and the final event reached the socket
    # live (from the relay, idle again during the model's 4 s, woken by the result's NOTIFY), not at a check.
    claimed = next(e for e in timeline(api, lifecycle["id"]) if e["event"] == "lifecycle.generating")
    assert claimed["duration_ms"] < 2000
    assert took < MODEL_S + 3, f"{took:.1f} s for a {MODEL_S:.0f} s model: a consumer slept through its wake"
