"""An operator opens the admin timeline of a finished lifecycle in real headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from tests.lifecycle.helpers import create, wait_status
from tests.webhooks.helpers import endpoint

pytestmark = [pytest.mark.stack, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


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
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 1500})

    page.goto(f"{stack.base_url}/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "correct horse battery")
    page.click("input[type=submit]")
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
