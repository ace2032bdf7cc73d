from __future__ import annotations

import shutil
import subprocess
import sys
import time
from unittest import mock

import httpx
import pytest
from django.conf import settings
from django.test import TransactionTestCase

from lifecycle.services import project_create
from orchestrator.embedded import PROJECT_DIR, free_port, wait_until
from tests.processes import PROCFILE, ServiceProcesses, poll_until


@pytest.fixture(scope="session", autouse=True)
def _flush_survives_deadlocks():
    """The service's processes keep working while a transactional test's teardown empties the tables, and
    Postgres may pick that TRUNCATE as a deadlock's victim: then it is tried again."""
    original = TransactionTestCase._fixture_teardown

    def teardown(self):
        for attempt in range(5):
            try:
                return original(self)
            except Exception as exc:
                if attempt == 4 or "deadlock" not in f"{exc!r} {exc.__cause__!r}":
                    raise
                time.sleep(0.2 * (attempt + 1))

    with mock.patch.object(TransactionTestCase, "_fixture_teardown", teardown):
        yield


def test_database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _serve(module: str, probe: str):
    """Run ``python -m module PORT`` until the session ends; yield its base URL once ``probe`` answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", module, str(port)], cwd=PROJECT_DIR)
    base_url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base_url}{probe}", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=20, what=module)
    yield base_url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def fake_openai():
    """A fake OpenAI- and Anthropic-compatible provider in its own process (tests/fakes/openai_server.py)."""
    yield from _serve("tests.fakes.openai_server", "/calls")


@pytest.fixture(scope="session")
def jwks_server():
    """A fake identity provider's JWKS endpoint in its own process (tests/fakes/jwks_server.py)."""
    yield from _serve("tests.fakes.jwks_server", "/health")


@pytest.fixture(scope="session")
def customer_backend():
    """A customer backend in its own process (tests/fakes/customer_backend.py)."""
    yield from _serve("tests.fakes.customer_backend", "/received/none")


@pytest.fixture(scope="session")
def stack(django_db_setup, django_db_blocker, tmp_path_factory, fake_openai):
    """The service's own processes, from the Procfile, against the test database and the embedded Kafka
    and Redis. Tests talk to them over HTTP, like a customer backend would."""
    metrics_dir = tmp_path_factory.mktemp("prometheus")
    processes = ServiceProcesses.create(
        log_dir=tmp_path_factory.mktemp("stack"),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        DATABASE_URL=test_database_url(),
        OPENAI_BASE_URL=f"{fake_openai}/v1",
        OPENAI_API_KEY="sk-test",
        ANTHROPIC_BASE_URL=fake_openai,
        ANTHROPIC_API_KEY="sk-ant-test",
        CELERY_CONCURRENCY="2",
        # Consumers sleep after 2 s with nothing to consume (kafka.Idle) and are woken by the outbox; a
        # wake missed would show as a 10 s stall (tests/lifecycle/test_idle.py).
        KAFKA_IDLE_AFTER_S="2",
        KAFKA_IDLE_CHECK_S="10",
        # A token with a new kid may fetch its issuer's JWKS again after 1 s (tests/lifecycle/test_identity.py).
        JWT_JWKS_MIN_REFRESH_S="1",
        # Flow control (tests/lifecycle/test_flow_control.py): a model limited to 2 calls a second, one
        # priced at a dollar an input token and two an output token, and caps picked up within a second.
        PROVIDER_LIMITS="echo/limited=rpm:120",
        MODEL_PRICES='{"echo/priced": [1000000, 2000000]}',
        GENERATOR_CAPS_REFRESH_S="1",
    )
    processes.env["LIVENESS_DIR"] = str(processes.log_dir)  # the loops' beats (tests/orchestrator/test_liveness.py)
    try:
        processes.start(*PROCFILE)
        with django_db_blocker.unblock():
            _warm_up(processes)
        yield processes
    finally:  # a warm-up that fails must not leave the processes running after the session
        processes.stop_all()


def _warm_up(processes: ServiceProcesses) -> None:
    """Wait until one lifecycle makes it through: the consumer groups have joined and every process is up."""
    project, api_key = make_project("warm-up")
    try:
        with api_client(processes, api_key) as client:
            created = client.post("/v1/lifecycles", json={"model": "echo/warm-up", "prompt": "ready?"})
            assert created.status_code == 202, created.text
            poll_until(
                lambda: client.get(f"/v1/lifecycles/{created.json()['id']}").json()["status"],
                lambda status: status == "completed",
                timeout=90,
                what="warm-up lifecycle completed",
            )
    finally:
        project.delete()


def make_project(name: str = "test project") -> tuple:
    return project_create(name=name)


@pytest.fixture
def project_key(transactional_db) -> tuple:
    """A committed project and its API key, visible to the stack's processes."""
    return make_project()


def api_client(stack: ServiceProcesses, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=15)


@pytest.fixture
def api(stack, project_key):
    project, api_key = project_key
    with api_client(stack, api_key) as client:
        client.project = project
        yield client


# Headless Chromium for the browser tests: Debian's chromium driven through Playwright.
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
