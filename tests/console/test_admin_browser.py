"""An operator opens the admin timeline of a finished lifecycle in real headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from tests.lifecycle.helpers import create, wait_status
from tests.webhooks.helpers import endpoint

pytestmark = [pytest.mark.stack, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, stack, *, height: int):
    """The operator's login, on a page 1280 wide and ``height`` tall (the screenshots' size)."""
    page.set_viewport_size({"width": 1280, "height": height})
    page.goto(f"{stack.base_url}/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "correct horse battery")
    page.click("input[type=submit]")
    return page


@pytest.fixture
def operator(transactional_db) -> None:
    # Before the browser starts: Playwright's event loop makes the ORM refuse to run in this thread.
    User.objects.create_superuser("operator", "op@example.com", "correct horse battery")


def test_an_operator_logs_in_and_reads_the_timeline_of_a_finished_lifecycle(
    api, stack, customer_backend, operator, browser_page, tmp_path
):
    endpoint(api, customer_backend, "500,error")
    lifecycle = create(
        api, {"model": "echo/support-bot", "prompt": "Where is order A-1001?", "metadata": {"order": "A-1001"}}
    )
    wait_status(api, lifecycle["id"], timeout=30)
    page = log_in(browser_page, stack, height=1500)
    page.goto(f"{stack.base_url}/admin/lifecycle/lifecycle/?q=A-1001")
    page.click(f"text={lifecycle['id'][:8]}")
    page.wait_for_selector(".lc-timeline")

    steps = page.eval_on_selector_all(".lc-timeline li", "els => els.map(e => e.dataset.event)")
    assert steps[0] == "lifecycle.created"
    assert steps[-1] == "lifecycle.failed"
    assert steps.count("webhook.attempt") == 2
    assert "backend_rejected" in page.text_content(".lc-error")
    assert "HTTP 500" in page.text_content(".lc-timeline")
    assert page.errors == []
    shots = Path(os.environ.get("SCREENSHOT_DIR", tmp_path))
    page.screenshot(path=str(shots / "admin-timeline.png"), full_page=True)


def test_from_the_overview_an_operator_finds_the_failing_step_and_the_slowest_one(
    api, stack, customer_backend, operator, browser_page, tmp_path
):
    hook, _ = endpoint(api, customer_backend, "500,error")  # one 500, then the backend rejects the result
    failed = create(api, {"model": "echo/support-bot", "prompt": "Where is order A-1002?"})
    slow = create(
        api, {"model": "echo/slow-bot", "prompt": "take your time", "params": {"latency_ms": 1500},
              "delivery": {"mode": "direct"}},
    )  # fmt: skip
    assert wait_status(api, failed["id"], timeout=30)["status"] == "failed"
    assert wait_status(api, slow["id"], timeout=30)["status"] == "completed"
    shots = Path(os.environ.get("SCREENSHOT_DIR", tmp_path))
    page = log_in(browser_page, stack, height=1000)

    page.click("text=Overview: the last hour at a glance")
    page.wait_for_selector("#throughput svg rect")
    assert "backend_rejected" in page.text_content("#failures")
    assert "127.0.0.1" in page.text_content("#endpoints")  # the endpoint that answered 500
    page.screenshot(path=str(shots / "console-overview.png"), full_page=True)

    # The failure's count leads to its lifecycles, and the waterfall shows the step to blame in red.
    page.click("#failures tr:has-text('backend_rejected') td.ov-num a")
    page.click(f"text={failed['id'][:8]}")
    page.wait_for_selector("#waterfall")
    blamed = page.eval_on_selector_all(
        ".wf-row.phase[data-state=bad]", "els => els.map(e => [e.dataset.step, e.textContent])"
    )
    assert [step for step, _ in blamed] == ["waiting for the callback"]
    assert "backend_rejected at step callback" in blamed[0][1]
    page.screenshot(path=str(shots / "console-waterfall-failed.png"), full_page=True)

    # The slowest generating step leads to a lifecycle (the suite's slowest, whichever it is) whose
    # waterfall marks its slowest step; the slow one here has generating marked.
    page.goto(f"{stack.base_url}/admin/overview/")
    page.click("#steps tr[data-step=generating] a")
    page.wait_for_selector("#waterfall")
    assert page.locator("[data-slowest=true]").count() == 1
    page.goto(f"{stack.base_url}/admin/lifecycle/lifecycle/{slow['id']}/change/")
    slowest = page.eval_on_selector_all("[data-slowest=true]", "els => els.map(e => e.dataset.step)")
    assert slowest == ["generating"]
    page.screenshot(path=str(shots / "console-waterfall-slow.png"), full_page=True)

    # A failing endpoint's own page (the overview links each): its health and its attempts.
    page.goto(f"{stack.base_url}/admin/overview/")
    assert page.locator("#endpoints tr.failing a").count() >= 1
    page.goto(f"{stack.base_url}/admin/webhooks/webhookendpoint/{hook['id']}/change/")
    page.wait_for_selector("#endpoint-health")
    assert page.locator("#recent-attempts tr.bad").count() >= 1
    page.screenshot(path=str(shots / "console-endpoint.png"), full_page=True)
    assert page.errors == []
