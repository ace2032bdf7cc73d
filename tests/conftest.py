from __future__ import annotations

import httpx
import pytest
from django.conf import settings

from lifecycle.services import project_create
from tests.processes import ServiceProcesses


def test_database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture(scope="session")
def stack(django_db_setup, tmp_path_factory):
    """The service's own processes (web, relay, generator) running against the test database and the
    embedded Kafka and Redis. Tests talk to them over HTTP, like a customer backend would."""
    processes = ServiceProcesses.create(
        log_dir=tmp_path_factory.mktemp("stack"),
        DATABASE_URL=test_database_url(),
        RECONCILE_AFTER_S="3",
        GENERATION_LEASE_S="5",
    )
    processes.start("web", "relay", "generator")
    yield processes
    processes.stop_all()


@pytest.fixture
def project_key(transactional_db) -> tuple:
    """A committed project and its API key, visible to the stack's processes."""
    project, api_key = project_create(name="test project")
    return project, api_key


@pytest.fixture
def api(stack, project_key):
    project, api_key = project_key
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10) as client:
        client.project = project
        yield client
