"""orchestrator/postgresql: the per-request health check asks the socket first, and the server only when the
socket has something to say (a restart's goodbye), so a reused connection costs no round trip while it works
and is still replaced once its server went away."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from orchestrator import db
from tests.processes import poll_until

pytestmark = pytest.mark.django_db(transaction=True)


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_a_working_connection_is_checked_without_a_query():
    pid = backend_pid()
    assert all(connection.is_usable() for _ in range(100))
    with psycopg.connect(**db.connection_params(), autocommit=True) as other:
        last = other.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]
    assert last == "SELECT pg_backend_pid()"  # not a health check's SELECT 1


def test_a_connection_whose_server_went_away_is_not_usable_and_is_replaced():
    pid = backend_pid()
    with psycopg.connect(**db.connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    poll_until(connection.is_usable, lambda usable: not usable, timeout=5, what="the terminated connection gone")

    connection.health_check_done = False
    connection.close_if_health_check_failed()
    assert backend_pid() != pid  # a new connection, and it works
