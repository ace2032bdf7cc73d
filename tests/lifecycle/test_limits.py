"""lifecycle/limits.py against the embedded Redis: each Gate is what one generator process holds, so two
Gates are two generators sharing the same limits."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from lifecycle import limits
from lifecycle.models import Project
from orchestrator.embedded import free_port


@pytest.fixture
def configured(settings):
    """A model of its own per test, limited as the test says."""

    def configure(spec: str) -> str:
        model = f"test/{uuid.uuid4().hex[:8]}"
        settings.PROVIDER_LIMITS = [f"{model}={spec}"]
        limits._configured.cache_clear()
        return model

    yield configure
    limits._configured.cache_clear()


async def admit(gate: limits.Gate, model: str, tokens: int = 1, **kwargs) -> limits.Admission:
    return await gate.admit(model=model, tokens=tokens, **{"project": "", "cap": None, "member": ""} | kwargs)


def test_a_requests_per_minute_limit_is_shared_by_every_generator(configured):
    model = configured("rpm:600")  # one call every ~100 ms

    async def scenario() -> None:
        one, other = limits.Gate(), limits.Gate()
        for gate in (one, other):  # connected before the clock matters: a slow first connect ate the spacing
            await gate._client().ping()
        # The first call, and one a spacing early (what a late caller catches up with), then one a spacing.
        assert [(await admit(gate, model)).outcome for gate in (one, other)] == [limits.ADMITTED] * 2
        refused = await admit(other, model)

        assert refused.outcome == limits.LIMITED
        assert 0.09 < refused.wait_s <= 60 / 588  # 600 a minute less the 2% headroom: 588
        assert model in other.holds()[1]  # the other generator holds the model back until then
        await asyncio.sleep(refused.wait_s)
        assert (await admit(other, model)).outcome == limits.ADMITTED

        # However hard two generators ask, a second admits no more than its share (and the one early).
        admitted, started = 0, time.monotonic()
        while time.monotonic() - started < 1.0:
            for gate in (one, other):
                admitted += (await admit(gate, model)).outcome == limits.ADMITTED
        assert admitted <= 600 / 60 * 0.98 + 2

    asyncio.run(scenario())


def test_tokens_are_charged_by_the_estimate_and_settled_by_the_usage(configured):
    model = configured("tpm:6000")  # 100 tokens a second

    async def scenario() -> None:
        gate = limits.Gate()
        assert (await admit(gate, model, tokens=100)).outcome == limits.ADMITTED
        assert (await admit(gate, model, tokens=100)).wait_s == pytest.approx(1.0, abs=0.05)
        await gate.settle(model, estimated=100, used=10)  # it used 10: 90 back

        assert (await admit(gate, model, tokens=100)).wait_s == pytest.approx(0.1, abs=0.05)

    asyncio.run(scenario())


def test_a_pause_holds_every_generator_and_is_never_shortened(configured):
    model = configured("rpm:60000")

    async def scenario() -> None:
        one, other = limits.Gate(), limits.Gate()
        await one.pause(model, 1.0)
        await other.pause(model, 0.1)  # a later, shorter Retry-After
        refused = await admit(other, model)

        assert refused.outcome == limits.PAUSED
        assert refused.wait_s > 0.8

    asyncio.run(scenario())


def test_a_project_cap_counts_generations_across_generators_until_they_end_or_their_lease_runs_out(settings):
    settings.GENERATION_LEASE_S = 1
    project = uuid.uuid4().hex

    async def scenario() -> None:
        one, other = limits.Gate(), limits.Gate()

        async def start(gate: limits.Gate, member: str) -> str:
            return (await admit(gate, "echo/x", project=project, cap=2, member=member)).outcome

        assert [await start(one, "a"), await start(other, "b"), await start(one, "a")] == [limits.ADMITTED] * 3
        assert await start(other, "c") == limits.CAPPED  # a twice is one lease
        assert project in other.holds()[0]

        await one.release(project, "a")
        assert await start(other, "c") == limits.ADMITTED
        assert await start(one, "d") == limits.CAPPED

        await asyncio.sleep(1.1)  # b's and c's generators died: their leases run out
        assert await start(one, "d") == limits.ADMITTED

    asyncio.run(scenario())


def test_while_redis_is_away_generations_go_on_unlimited(configured, settings):
    model = configured("rpm:1")
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"

    async def scenario() -> list[str]:
        gate = limits.Gate()
        return [(await admit(gate, model)).outcome for _ in range(3)]

    assert asyncio.run(scenario()) == [limits.ADMITTED] * 3


def test_limits_that_are_not_limits_are_refused_at_start():
    assert limits.parse_limits(["openai/*=rpm:500", "anthropic/claude=rpm:5,tpm:1000"]) == {
        "openai/*": limits.Limit(rpm=500),
        "anthropic/claude": limits.Limit(rpm=5, tpm=1000),
    }
    for spec in ["openai/gpt=rpm:0", "openai/gpt=rpm:lots", "gpt=rpm:5", "openai/gpt=", "openai/gpt=rph:5"]:
        with pytest.raises(ValueError, match="PROVIDER_LIMITS"):
            limits.parse_limits([spec])


@pytest.mark.django_db
def test_manage_py_projectlimits_sets_and_clears_a_projects_cap_and_budget():
    project = Project.objects.create(name="limited")

    def run(*args: str) -> dict:
        out = StringIO()
        call_command("projectlimits", str(project.id), *args, stdout=out)
        return json.loads(out.getvalue())

    shown = run("--max-in-flight", "8", "--daily-budget-usd", "25.50")
    assert shown == {"project_id": str(project.id), "max_generations_in_flight": 8, "daily_budget_usd": "25.50"}
    assert run("--max-in-flight", "none")["max_generations_in_flight"] is None
    assert run()["daily_budget_usd"] == "25.50"
    for bad in (["--max-in-flight", "0"], ["--daily-budget-usd", "-1"], ["--daily-budget-usd", "1.001"]):
        with pytest.raises(CommandError):
            run(*bad)
    with pytest.raises(CommandError, match="no project"):
        call_command("projectlimits", str(uuid.uuid4()))
