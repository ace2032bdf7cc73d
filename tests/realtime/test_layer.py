"""The channel layer against the embedded Redis: one subscription per process and group, fan-out in memory,
nothing left behind by sockets that went away, and subscriptions back after Redis restarts."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from django.conf import settings

from orchestrator import metrics
from realtime.layer import FanOutLayer
from tests.embedded_servers import embedded_stack


def a_layer(**options) -> FanOutLayer:
    """A layer of its own, as another process would have: its own prefix keeps tests apart."""
    return FanOutLayer(url=settings.REDIS_URL, prefix=f"test-{uuid.uuid4().hex[:8]}:", **options)


def subscribers(layer: FanOutLayer, group: str) -> int:
    """How many connections Redis counts on the group's channel."""
    (_, count), *_ = redis.Redis.from_url(settings.REDIS_URL).pubsub_numsub(layer.prefix + group)
    return count


async def nothing_more(layer: FanOutLayer, channel: str) -> bool:
    try:
        await asyncio.wait_for(layer.receive(channel), 0.3)
    except TimeoutError:
        return True
    return False


def test_a_group_send_reaches_each_socket_of_the_group_once_in_every_process_and_no_one_else():
    async def scenario() -> None:
        one, other = a_layer(), a_layer()
        other.prefix = one.prefix  # two processes of the same service
        a, b, c = [await one.new_channel() for _ in range(3)]
        d = await other.new_channel()
        for layer, channel in ((one, a), (one, b), (other, d)):
            await layer.group_add("lifecycle.x", channel)
        await one.group_add("lifecycle.y", c)

        assert subscribers(one, "lifecycle.x") == 2  # one subscription per process, not one per socket

        await one.group_send("lifecycle.x", {"type": "lifecycle.event", "n": 1})
        assert [await asyncio.wait_for(layer.receive(ch), 2) for layer, ch in ((one, a), (one, b), (other, d))] == [
            {"type": "lifecycle.event", "n": 1}
        ] * 3
        assert await nothing_more(one, a) and await nothing_more(one, c)
        await one.flush()
        await other.flush()

    asyncio.run(scenario())


def test_sockets_that_come_and_go_leave_nothing_in_the_process_or_in_redis():
    async def scenario() -> None:
        layer = a_layer()
        keeper = await layer.new_channel()
        await layer.group_add("kept", keeper)
        for i in range(300):
            channel = await layer.new_channel()
            await layer.group_add(f"lifecycle.{i % 7}", channel)
            if i % 2:
                await layer.group_discard(f"lifecycle.{i % 7}", channel)
            task = asyncio.ensure_future(layer.receive(channel))
            await asyncio.sleep(0)
            task.cancel()  # what Channels does when a consumer ends
            await asyncio.gather(task, return_exceptions=True)
        here = layer._here()
        assert set(here.channels) == {keeper}
        assert here.groups == {"kept": {keeper}}
        assert here.member_of == {keeper: {"kept"}}
        await asyncio.sleep(0.5)  # the UNSUBSCRIBEs go out in the background
        assert [subscribers(layer, f"lifecycle.{i}") for i in range(7)] == [0] * 7
        assert subscribers(layer, "kept") == 1
        await layer.flush()

    asyncio.run(scenario())


def test_a_socket_that_does_not_read_loses_only_its_own_overflow():
    async def scenario() -> None:
        layer = a_layer(capacity=3)
        slow, fast = await layer.new_channel(), await layer.new_channel()
        for channel in (slow, fast):
            await layer.group_add("g", channel)
        dropped = metrics.REALTIME_DROPPED._value.get()
        received = []
        for n in range(5):
            await layer.group_send("g", {"type": "m", "n": n})
            received.append((await asyncio.wait_for(layer.receive(fast), 2))["n"])
        await asyncio.sleep(0.2)
        assert received == [0, 1, 2, 3, 4]
        assert [(await layer.receive(slow))["n"] for _ in range(3)] == [0, 1, 2]
        assert metrics.REALTIME_DROPPED._value.get() - dropped == 2
        await layer.flush()

    asyncio.run(scenario())


@pytest.mark.stack  # restarts the session's Redis: run with the tests that already do
def test_after_redis_restarts_the_layer_subscribes_again_and_says_so():
    server = embedded_stack().server("redis")

    async def scenario() -> None:
        layer = a_layer(health_check_s=1)
        back = asyncio.Event()
        layer.on_resubscribed(back.set)
        channel = await layer.new_channel()
        await layer.group_add("g", channel)

        await asyncio.to_thread(server.stop)
        joiner = await layer.new_channel()
        with pytest.raises(ConnectionError):  # at once, not after a timeout: the socket is told to retry
            async with asyncio.timeout(3):
                while True:  # until the layer has noticed that Redis is gone
                    await layer.group_add("g2", joiner)
                    await layer.group_discard("g2", joiner)
                    await asyncio.sleep(0.1)
        await asyncio.to_thread(server.start)

        await asyncio.wait_for(back.wait(), 30)
        assert subscribers(layer, "g") == 1
        await layer.group_send("g", {"type": "m", "after": "restart"})
        assert await asyncio.wait_for(layer.receive(channel), 2) == {"type": "m", "after": "restart"}
        await layer.flush()

    asyncio.run(scenario())
