"""Flow control on the real stack (shared/ARCHITECTURE.md, Flow control): a model's configured limit and a
project's cap hold generations back in their turn without holding up anyone else; usage and cost are on
every lifecycle and summed per day; a project past its daily budget is refused before anything is written.

The stack runs with ``PROVIDER_LIMITS="echo/limited=rpm:120"`` (a call every 500 ms) and ``echo/priced`` at
$1 an input token and $2 an output token (tests/conftest.py); echo counts a token a word, each way."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone

from lifecycle.models import Lifecycle, UsageDaily
from tests.conftest import api_client, make_project
from tests.lifecycle.helpers import create, timeline, wait_status

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def calls(api, lifecycle_id: str) -> list[tuple[datetime, datetime]]:
    """When each provider call of the lifecycle started and ended."""
    spans = []
    for event in timeline(api, lifecycle_id):
        if event["event"] == "generation.attempt":
            ended = datetime.fromisoformat(event["at"])
            spans.append((ended - timedelta(milliseconds=event["payload"]["latency_ms"]), ended))
    return spans


def test_a_burst_to_a_limited_model_drains_at_its_limit_while_other_models_go_on(api):
    burst = [create(api, {"model": "echo/limited", "prompt": f"limited {n}"}) for n in range(6)]
    other = create(api, {"model": "echo/unlimited", "prompt": "not held"})

    other_done = datetime.fromisoformat(wait_status(api, other["id"])["finished_at"])
    done = [wait_status(api, lc["id"], timeout=30) for lc in burst]

    assert {lc["status"] for lc in done} == {"completed"}
    starts = sorted(calls(api, lc["id"])[0][0] for lc in burst)
    # 120 a minute (less 2% headroom) is a call every 510 ms, the second of a burst at once: six take 2 s.
    # (How many fall in one second is left to tests/lifecycle/test_limits.py, on Redis's own clock: these
    # start times carry each claim's own delay.)
    assert (starts[-1] - starts[0]).total_seconds() >= 4 * 0.51 - 0.05, starts
    # The other model did not wait for the burst to drain.
    assert other_done < max(datetime.fromisoformat(lc["finished_at"]) for lc in done)


def test_a_project_at_its_cap_waits_for_its_own_generations_not_for_anyone_else(stack, api):
    api.project.max_generations_in_flight = 2
    api.project.save(update_fields=["max_generations_in_flight"])
    _, other_key = make_project("uncapped")
    time.sleep(1.5)  # the generators refresh caps every second here (GENERATOR_CAPS_REFRESH_S)
    slow = {"model": "echo/x", "params": {"latency_ms": 1000}}
    capped = [create(api, slow | {"prompt": f"capped {n}"}) for n in range(6)]
    with api_client(stack, other_key) as other:
        theirs = [create(other, slow | {"prompt": f"free {n}"}) for n in range(4)]
        theirs_done = [wait_status(other, lc["id"]) for lc in theirs]
    done = [wait_status(api, lc["id"], timeout=30) for lc in capped]

    assert {lc["status"] for lc in done + theirs_done} == {"completed"}
    spans = [calls(api, lc["id"])[0] for lc in capped]
    most_at_once = max(sum(start <= at < end for start, end in spans) for at, _ in spans)
    assert most_at_once == 2
    # The other project's four ran at once, beside the capped one's two: about a second, not the four or
    # more they would take behind the capped project's six.
    finished = [datetime.fromisoformat(lc["finished_at"]) for lc in theirs_done]
    created = [datetime.fromisoformat(lc["created_at"]) for lc in theirs_done]
    assert max(finished) - min(created) < timedelta(seconds=3.5)


def test_usage_and_cost_are_on_the_lifecycle_its_timeline_and_the_days_sums(api):
    lifecycle = wait_status(api, create(api, {"model": "echo/priced", "prompt": "three words here"})["id"])
    wait_status(api, create(api, {"model": "echo/x", "prompt": "free of charge"})["id"])

    # 3 tokens in at $1, 3 out at $2.
    assert lifecycle["usage"] == {"input_tokens": 3, "output_tokens": 3, "cost_usd": 9.0}
    (completed,) = [e for e in timeline(api, lifecycle["id"]) if e["event"] == "lifecycle.completed"]
    assert completed["payload"]["usage"]["cost_usd"] == 9.0

    usage = api.get("/v1/usage").json()
    today = str(timezone.now().date())
    assert usage["to"] == today
    by_model = {row["model"]: row for row in usage["data"]}
    assert by_model["echo/priced"] == {
        "date": today, "model": "echo/priced", "requests": 1, "input_tokens": 3, "output_tokens": 3, "cost_usd": 9.0,
    }  # fmt: skip
    assert by_model["echo/x"]["cost_usd"] == 0
    assert usage["total"] == {"requests": 2, "input_tokens": 6, "output_tokens": 6, "cost_usd": 9.0}
    assert usage["budget"] == {"daily_usd": None, "spent_today_usd": 9.0}

    assert api.get("/v1/usage", params={"from": today, "to": "2000-01-01"}).status_code == 400
    refused = api.get("/v1/usage", params={"from": "yesterday"})
    assert refused.status_code == 400
    assert refused.json()["error"]["details"] == {"from": "Must be a date, YYYY-MM-DD (UTC)."}


def test_past_its_daily_budget_a_project_is_refused_until_the_next_day_and_nothing_is_written(stack, api):
    api.project.daily_budget_usd = Decimal("10.00")
    api.project.save(update_fields=["daily_budget_usd"])
    priced = {"model": "echo/priced", "prompt": "three words here"}
    wait_status(api, create(api, priced)["id"])  # $9: still under
    wait_status(api, create(api, priced)["id"])  # $18: over now
    written = Lifecycle.objects.filter(project=api.project).count()

    refused = api.post("/v1/lifecycles", json=priced)

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"
    tomorrow = datetime.combine(timezone.now().date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    assert abs(int(refused.headers["Retry-After"]) - (tomorrow - timezone.now()).total_seconds()) < 60
    # The OpenAI-compatible endpoint refuses the same way, and tells the SDKs not to retry.
    chat = httpx.post(
        f"http://127.0.0.1:{stack.env['REALTIME_PORT']}/v1/chat/completions",
        json={"model": "echo/priced", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": api.headers["Authorization"]},
        timeout=15,
    )
    assert chat.status_code == 429
    assert chat.json()["error"]["code"] == "budget_exceeded"
    assert chat.headers["x-should-retry"] == "false"
    assert Lifecycle.objects.filter(project=api.project).count() == written
    assert UsageDaily.objects.get(project=api.project, model="echo/priced").cost_usd == Decimal(18)
    assert api.get("/v1/usage").json()["budget"] == {"daily_usd": 10.0, "spent_today_usd": 18.0}
