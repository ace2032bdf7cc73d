"""The lifecycle page's waterfall (console/waterfall.py): the steps on one time axis, the failed one red with
its error, the slowest one marked, every attempt a bar of its own that opens to its payload."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse

from lifecycle.models import Lifecycle
from tests.conftest import make_project
from tests.console.factories import rich_lifecycle

pytestmark = pytest.mark.django_db


def rows(admin_client, lifecycle) -> list[dict]:
    page = admin_client.get(reverse("admin:lifecycle_lifecycle_change", args=[lifecycle.id])).content.decode()
    found = re.findall(
        r'<details class="wf-row (\w+)" data-step="([^"]+)" data-state="(\w+)"( data-slowest="true")?>(.*?)</details>',
        page,
        re.S,
    )
    return [
        {"kind": kind, "step": step, "state": state, "slowest": bool(slowest), "html": html}
        for kind, step, state, slowest, html in found
    ]


def test_a_failed_lifecycle_shows_its_failing_step_in_red_with_the_error(admin_client):
    project, _ = make_project()
    failed = rich_lifecycle(project, fail=True)

    drawn = rows(admin_client, failed)

    phases = [(row["step"], row["state"]) for row in drawn if row["kind"] == "phase"]
    assert phases == [
        ("queued", "ok"), ("generating", "ok"), ("webhook", "ok"), ("waiting for the callback", "bad"),
    ]  # fmt: skip
    (blamed,) = [row for row in drawn if row["state"] == "bad" and row["kind"] == "phase"]
    assert "backend_rejected at step callback: Out of stock." in blamed["html"]
    attempts = [(row["step"], row["state"]) for row in drawn if row["kind"] == "attempt"]
    assert attempts[:2] == [("openai/gpt-test · attempt 1", "bad"), ("openai/gpt-test · attempt 2", "ok")]
    assert [state for step, state in attempts if step.startswith("webhook")] == ["bad", "bad", "ok"]
    assert "HTTP 429" in drawn[2]["html"] and "provider answered 429" in drawn[2]["html"]  # its payload, openable
    assert any(row["step"].startswith("failed: final event") and row["state"] == "bad" for row in drawn)


def test_the_slowest_step_of_a_slow_lifecycle_is_marked(admin_client):
    project, _ = make_project()
    slow = rich_lifecycle(project)
    start = slow.created_at
    # Generated in 2 s, the webhook delivered in 0.3 s, then 9 s until the backend called back.
    Lifecycle.objects.filter(id=slow.id).update(
        generating_at=start + timedelta(milliseconds=100),
        delivering_at=start + timedelta(seconds=2),
        awaiting_callback_at=start + timedelta(seconds=2.3),
        finished_at=start + timedelta(seconds=11.3),
    )

    drawn = rows(admin_client, slow)

    (slowest,) = [row for row in drawn if row["slowest"]]
    assert slowest["step"] == "waiting for the callback"
    assert "9.00 s" in slowest["html"]
    assert all(row["state"] == "ok" for row in drawn if row["kind"] == "phase")  # it completed
