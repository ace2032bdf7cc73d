"""Database access outside Django's request cycle: raw psycopg connections (LISTEN/NOTIFY, session-level
locks) and ORM calls from asyncio code."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator

import psycopg
from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connection

from orchestrator.outages import Outage

log = logging.getLogger(__name__)

# Django's own parameters include its cursor class and adapters, which only suit its sync connection.
_DJANGO_ONLY = {"cursor_factory", "context", "prepare_threshold", "client_encoding"}


def connection_params() -> dict:
    return {k: v for k, v in connection.get_connection_params().items() if k not in _DJANGO_ONLY}


def in_thread(fn):
    """``fn`` made awaitable, run on a worker thread with its own connection, so many calls from one event
    loop (the generator's concurrent generations) run side by side.

    A thread whose call failed on a broken connection (PostgreSQL restarted or failed over) drops that
    connection, so its next call opens a new one: these threads live as long as the process and never pass
    through Django's request cycle, which is what closes broken connections elsewhere."""

    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (OperationalError, InterfaceError):
            drop_broken_connection()
            raise

    return sync_to_async(run, thread_sensitive=False)


_outage = Outage("PostgreSQL", log)


async def patiently(fn, /, *args, **kwargs):
    """``await in_thread(fn)(...)``, and while PostgreSQL is away (restarting, failing over), wait and try
    again instead of failing: the caller keeps the work it holds until the database is back. Only for
    calls that are safe to repeat (every service guards its state, so a repeat is a no-op)."""
    call = in_thread(fn)
    while True:
        try:
            result = await call(*args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            await asyncio.sleep(_outage.failed(exc))
            continue
        _outage.ok()
        return result


async def listen(channels: dict[str, Callable[[str], None]], who: str) -> None:
    """Call ``channels[name](payload)`` for every NOTIFY on those channels, for ever: while PostgreSQL is
    away, wait for it (logged once) and listen again."""
    outage = Outage(f"{who}: PostgreSQL (LISTEN)", log)
    while True:
        try:
            params = await in_thread(connection_params)()
            async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as conn:
                for name in channels:
                    await conn.execute(f"LISTEN {name}")
                outage.ok()
                async for notify in conn.notifies():
                    channels[notify.channel](notify.payload)
        except psycopg.Error as exc:
            await asyncio.sleep(outage.failed(exc))
        except Exception:
            log.exception("%s: listener failed; listening again", who)
            await asyncio.sleep(1)


def drop_broken_connection() -> None:
    """Close this thread's connection if it no longer works (it is opened again on next use)."""
    if connection.connection is not None and not connection.in_atomic_block and not connection.is_usable():
        with contextlib.suppress(Exception):
            connection.close()


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
