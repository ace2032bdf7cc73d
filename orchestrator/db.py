"""Database access outside Django's request cycle: raw psycopg connections (LISTEN/NOTIFY, session-level
locks) and ORM calls from asyncio code."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

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
_listening: list[Outage] = []  # each running listener's (listen())


def away() -> bool:
    """Whether this process last found PostgreSQL away: a call waiting it out (:func:`patiently`), or a
    listener."""
    return _outage.ongoing or any(outage.ongoing for outage in _listening)


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
    _listening.append(outage)
    try:
        while True:
            try:
                params = await in_thread(connection_params)()
                async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as conn:
                    # (One that arrives while the LISTENs are under way is read by psycopg, and handed on here.)
                    conn.add_notify_handler(lambda notify: channels[notify.channel](notify.payload))
                    for name in channels:
                        await conn.execute(f"LISTEN {name}")
                    outage.ok()
                    await _hand_on(conn, channels)
            except psycopg.Error as exc:
                await asyncio.sleep(outage.failed(exc))
            except Exception:
                log.exception("%s: listener failed; listening again", who)
                await asyncio.sleep(1)
    finally:
        _listening.remove(outage)


async def _hand_on(conn: psycopg.AsyncConnection, channels: dict[str, Callable[[str], None]]) -> None:
    """Call each notification's channel as it arrives on an idle LISTEN connection, until the connection
    fails (raised as psycopg's ``OperationalError``). The event loop watches the socket for as long as the
    connection lives, and each time it is readable libpq reads what came and hands over every notification
    in it: psycopg's ``notifies()`` registered and unregistered the socket with the loop's selector for each
    notification, ~10% of a generator's busy samples, which gets one per outbox commit."""
    loop = asyncio.get_running_loop()
    failed: asyncio.Future = loop.create_future()
    pgconn, encoding = conn.pgconn, conn.info.encoding

    def readable() -> None:
        try:
            pgconn.consume_input()
            while (notify := pgconn.notifies()) is not None:
                channels[notify.relname.decode(encoding)](notify.extra.decode(encoding))
        except Exception as exc:
            loop.remove_reader(socket)
            if not failed.done():
                failed.set_exception(exc)

    socket = pgconn.socket
    loop.add_reader(socket, readable)
    readable()  # what libpq may hold already, read with the LISTENs' answers
    try:
        await failed
    finally:
        loop.remove_reader(socket)


class GroupCommit:
    """Writes from many coroutines made together: each awaits its own, and what arrives while a write is
    under way goes in the next one, one transaction for all of it (``many(items) -> outcomes``, in order).
    Under light load every write holds one item and waits for nothing; under load a write holds what came
    meanwhile. ``writers`` writes run at once, each of at most ``most`` items. A write of several that fails
    (a bad item, a deadlock) is made again item by item (``one``), so one item's fault stays its own.
    PostgreSQL being away is waited out (:func:`patiently`), so both must be safe to repeat."""

    def __init__(
        self,
        many: Callable[[list], Sequence],
        one: Callable[[Any], Any],
        *,
        what: str,
        writers: int = 4,
        most: int = 200,
    ) -> None:
        self.many, self.one, self.what = many, one, what
        self.writers, self.most = writers, most
        self.queue: asyncio.Queue = asyncio.Queue()
        self.tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._write()) for _ in range(self.writers)]

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()

    async def put(self, item) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((item, future))
        return await future

    async def _write(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.most and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                outcomes = await patiently(self.many, [item for item, _ in batch])
            except Exception:
                log.exception("writing %d %s together failed; writing each alone", len(batch), self.what)
                await self._write_each(batch)
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():  # its writer was cancelled meanwhile
                    future.set_result(outcome)

    async def _write_each(self, batch) -> None:
        for item, future in batch:
            try:
                outcome = await patiently(self.one, item)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            if not future.done():
                future.set_result(outcome)


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
