"""The demo page in real headless Chromium: submit a prompt, watch the steps and the result arrive live."""

from __future__ import annotations

import shutil

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The Chromium flags that work on a machine with no network beyond loopback.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors
        yield page
        browser.close()


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
