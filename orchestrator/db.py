"""Database access outside Django's request cycle: raw psycopg connections (LISTEN/NOTIFY, session-level
locks) and ORM calls from asyncio code."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

from asgiref.sync import sync_to_async
from django.db import connection

# Django's own parameters include its cursor class and adapters, which only suit its sync connection.
_DJANGO_ONLY = {"cursor_factory", "context", "prepare_threshold", "client_encoding"}


def connection_params() -> dict:
    return {k: v for k, v in connection.get_connection_params().items() if k not in _DJANGO_ONLY}


def in_thread(fn):
    """``fn`` made awaitable, run on a worker thread with its own connection, so many calls from one event
    loop (the generator's concurrent generations) run side by side."""
    return sync_to_async(fn, thread_sensitive=False)


@contextlib.contextmanager
def single_flight(name: str) -> Iterator[bool]:
    """A Postgres session-level advisory lock named ``name``, tried without waiting: yields whether this
    caller holds it. It is released on exit, or with the connection if the process dies."""
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        held = cursor.fetchone()[0]
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
