"""``orchestrator.db.listen``: every NOTIFY reaches its channel's callback, in order, and a listener whose
connection is cut listens again."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from orchestrator import db

pytestmark = pytest.mark.django_db(transaction=True)


def notify(*notices: tuple[str, str]) -> None:
    """Each notice in a transaction of its own, as commits send them."""
    with psycopg.connect(**db.connection_params(), autocommit=True) as conn:
        for channel, payload in notices:
            conn.execute("SELECT pg_notify(%s, %s)", [channel, payload])


ONE, TWO = "test_listen_one", "test_listen_two"


def listener_pids() -> list[int]:
    """This test's listener's session, by the last thing it sent (the stack's processes listen too)."""
    with psycopg.connect(**db.connection_params(), autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE query = %s", [f"LISTEN {TWO}"]).fetchall()
    return [pid for (pid,) in rows]


async def eventually(condition) -> None:
    """Wait, without holding up the listener on this event loop, until ``condition()`` holds (10 s at most)."""
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.02)


def test_every_notification_reaches_its_channel_in_order_and_a_cut_connection_listens_again():
    got: list[tuple[str, str]] = []
    channels = {name: (lambda payload, name=name: got.append((name, payload))) for name in (ONE, TWO)}

    async def scenario() -> None:
        listening = asyncio.create_task(db.listen(channels, "test"))
        try:
            await eventually(listener_pids)
            await asyncio.sleep(0.1)  # both LISTENs done
            sent = [(ONE, str(i)) if i % 3 else (TWO, str(i)) for i in range(200)]
            await asyncio.to_thread(notify, *sent, ("other", "not listened to"))
            await eventually(lambda: len(got) >= len(sent))
            await asyncio.sleep(0.1)
            assert got == sent

            # PostgreSQL ends the listener's session (a restart, a failover): it connects and listens again.
            (pid,) = listener_pids()
            with psycopg.connect(**db.connection_params(), autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", [pid])
            await eventually(lambda: listener_pids() not in ([], [pid]))
            await asyncio.sleep(0.1)
            got.clear()
            await asyncio.to_thread(notify, (TWO, "after"))
            await eventually(lambda: len(got) >= 1)
            assert got == [(TWO, "after")]
        finally:
            listening.cancel()
            with pytest.raises(asyncio.CancelledError):
                await listening

    asyncio.run(scenario())
