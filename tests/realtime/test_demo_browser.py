"""The demo page in real headless Chromium: submit a prompt, watch the steps and the result arrive live."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_demo_page_shows_each_step_and_the_final_result(stack, project_key, browser_page, tmp_path):
    _, api_key = project_key
    page = browser_page

    page.goto(f"{stack.base_url}/demo/")
    page.fill("#key", api_key)
    page.fill("#latency", "800")
    page.fill("#prompt", "Summarise the order #42 status for the customer.")
    page.click("#submit")
    page.wait_for_selector("#final.completed", timeout=30_000)

    assert page.text_content("#final") == "Summarise the order #42 status for the customer."
    assert page.text_content("#status") == "completed"
    steps = page.eval_on_selector_all("#steps li", "els => els.map(e => e.dataset.event)")
    assert steps == ["lifecycle.created", "lifecycle.generating", "generation.attempt", "lifecycle.completed"]
    assert page.errors == []
    page.screenshot(path=str(tmp_path / "demo.png"))


def test_the_demo_page_shows_a_clear_error_for_a_bad_key(stack, browser_page):
    page = browser_page

    page.goto(f"{stack.base_url}/demo/")
    page.fill("#key", "lk_000000000000_wrong")
    page.click("#submit")
    page.wait_for_selector("#final.failed", timeout=10_000)

    assert "401 unauthenticated" in page.text_content("#final")
