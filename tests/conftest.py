from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from django.conf import settings

from lifecycle.services import project_create
from orchestrator.embedded import PROJECT_DIR, free_port, wait_until
from tests.processes import ServiceProcesses


def test_database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture(scope="session")
def fake_openai():
    """A fake OpenAI- and Anthropic-compatible provider in its own process (tests/fakes/openai_server.py)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", str(port)], cwd=PROJECT_DIR)
    base_url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base_url}/calls", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=20, what="fake OpenAI server")
    yield base_url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def stack(django_db_setup, tmp_path_factory, fake_openai):
    """The service's own processes, from the Procfile, against the test database and the embedded Kafka
    and Redis. Tests talk to them over HTTP, like a customer backend would."""
    processes = ServiceProcesses.create(
        log_dir=tmp_path_factory.mktemp("stack"),
        DATABASE_URL=test_database_url(),
        OPENAI_BASE_URL=f"{fake_openai}/v1",
        OPENAI_API_KEY="sk-test",
        ANTHROPIC_BASE_URL=fake_openai,
        ANTHROPIC_API_KEY="sk-ant-test",
        CELERY_CONCURRENCY="2",
    )
    processes.start("web", "relay", "generator", "worker", "beat")
    yield processes
    processes.stop_all()


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
