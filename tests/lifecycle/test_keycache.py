"""lifecycle/keycache.py: a request's API key and project come from the process's memory while nothing about
keys or projects changed, from PostgreSQL again after any change, and always from PostgreSQL while Redis
is away. (Across processes, with a revocation: tests/security/test_security.py.)"""

from __future__ import annotations

import pytest

from lifecycle import keycache, throttling
from lifecycle.models import Project
from lifecycle.services import api_key_authenticate, api_key_revoke, project_create
from orchestrator.embedded import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def raw_key():
    keycache.forget()
    _, raw = project_create(name="key cache")
    yield raw
    keycache.forget()


def test_a_key_is_read_once_while_nothing_changes(raw_key, django_assert_num_queries):
    with django_assert_num_queries(1):
        first = api_key_authenticate(raw_key=raw_key)
        again = [api_key_authenticate(raw_key=raw_key) for _ in range(5)]
    assert first is not None and all(key is first for key in again)


def test_a_saved_project_is_read_again_with_what_changed(raw_key, django_assert_num_queries):
    key = api_key_authenticate(raw_key=raw_key)
    stored = Project.objects.get(pk=key.project_id)  # saved elsewhere: the API, the admin, a command
    stored.rate_limit_per_s = 7
    stored.save()

    with django_assert_num_queries(1):
        assert api_key_authenticate(raw_key=raw_key).project.rate_limit_per_s == 7


def test_a_revoked_key_is_refused_by_the_next_request(raw_key):
    key = api_key_authenticate(raw_key=raw_key)
    api_key_revoke(key=key)
    assert api_key_authenticate(raw_key=raw_key) is None


def test_a_wrong_secret_is_refused_even_with_its_key_in_memory(raw_key):
    assert api_key_authenticate(raw_key=raw_key) is not None
    assert api_key_authenticate(raw_key=raw_key[:-1] + ("A" if raw_key[-1] != "A" else "B")) is None


def test_while_redis_is_away_every_request_reads_postgresql(raw_key, settings, django_assert_num_queries):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    throttling.redis_client.cache_clear()
    try:
        with django_assert_num_queries(3):
            assert all(api_key_authenticate(raw_key=raw_key) is not None for _ in range(3))
    finally:
        throttling.redis_client.cache_clear()
