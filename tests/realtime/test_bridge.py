"""The bridge commits what it has forwarded: a restart resumes where it stopped instead of replaying
``lifecycle.events`` from the start."""

from __future__ import annotations

import re

import httpx
import pytest
from django.utils import timezone

from lifecycle.models import OutboxMessage
from lifecycle.outbox import TOPIC_EVENTS
from tests.lifecycle.helpers import create, wait_status
from tests.processes import poll_until
from tests.realtime.helpers import collect, ws_url

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def forwarded_per_run(stack) -> list[int]:
    """What each run of the bridge process said it forwarded, as it exited."""
    return [int(n) for n in re.findall(r"bridge: forwarded (\d+) events", stack.log("bridge"))]


def stop_bridge(stack) -> int:
    """Stop the bridge (SIGTERM) and return what that run said it forwarded."""
    runs = len(forwarded_per_run(stack))
    stack.stop("bridge")  # the shell around it exits first; the bridge itself finishes what it holds
    return poll_until(
        lambda: forwarded_per_run(stack), lambda said: len(said) > runs, timeout=20, what="bridge exited"
    )[-1]


def broadcasts(stack) -> float:
    """Events every bridge run so far has handed to the channel layer (``/metrics`` adds up every process)."""
    text = httpx.get(f"{stack.base_url}/metrics").text
    found = re.search(r'^lifecycle_step_seconds_count\{step="broadcast"\} ([0-9.e+]+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def settled(stack) -> None:
    """Wait until the bridge has forwarded nothing new for a second."""
    seen: list[float] = []

    def quiet() -> bool:  # called every second
        seen.append(broadcasts(stack))
        return len(seen) > 1 and seen[-1] == seen[-2]

    poll_until(quiet, bool, timeout=30, interval=1.0, what="the bridge idle for a second")


def follow_live(api, stack, body: dict) -> list[dict]:
    """Create a lifecycle and read its socket from the start to its final event."""
    lifecycle = create(api, body)
    messages, _ = collect(ws_url(stack, lifecycle["id"], lifecycle["ws_token"]), timeout=30)
    wait_status(api, lifecycle["id"])
    return messages


def test_a_restarted_bridge_resumes_and_forwards_only_what_came_after(api, stack):
    for n in range(5):
        follow_live(api, stack, {"model": "echo/x", "prompt": f"before {n}"})
    settled(stack)  # nothing of an earlier test's still on its way: what the next run forwards is its own
    before = stop_bridge(stack)
    stopped_at = timezone.now()

    counted = broadcasts(stack)
    stack.start("bridge")
    messages = follow_live(api, stack, {"model": "echo/x", "prompt": "after the restart"})
    assert messages[-1]["event"] == "lifecycle.completed"
    # Its events come after anything the new run could replay, so once they are through, so is any replay.
    poll_until(lambda: broadcasts(stack), lambda n: n >= counted + 4, timeout=30, what="the new events forwarded")
    again = stop_bridge(stack)
    stack.start("bridge")

    published_since = OutboxMessage.objects.filter(topic=TOPIC_EVENTS, created_at__gte=stopped_at).count()
    assert before >= 5 * 4  # every event of the five lifecycles before (and whatever came earlier)
    assert 4 <= again <= published_since  # the new lifecycle's events, and nothing replayed from before
