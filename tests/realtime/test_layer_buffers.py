"""The channel layer's per-socket buffers in the realtime process: what the resync drops and what it keeps,
on the real channels-redis layer over the embedded Redis."""

from __future__ import annotations

import asyncio

from channels_redis.core import RedisChannelLayer
from django.conf import settings

from realtime.consumers import prune_receive_buffer


def layer() -> RedisChannelLayer:
    return RedisChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"], prefix="test-buffers")


async def _buffers_after_a_late_event_and_a_queued_one() -> tuple[set[str], set[str], int, dict]:
    channels = layer()
    gone, listening, behind = [await channels.new_channel() for _ in range(3)]
    # A socket that is listening pulls this process's messages off Redis, its neighbours' with its own: an
    # event for a socket that already left lands in a buffer nobody reads, one for a socket that is busy
    # (between two receives) waits in its buffer.
    receiving = asyncio.create_task(channels.receive(listening))
    await channels.send(gone, {"type": "lifecycle.event", "n": 1})
    await channels.send(behind, {"type": "lifecycle.event", "n": 2})
    for _ in range(100):
        if not channels.receive_buffer[gone].empty() and not channels.receive_buffer[behind].empty():
            break
        await asyncio.sleep(0.02)
    before = set(channels.receive_buffer)
    dropped = prune_receive_buffer(channels, live={listening, behind})
    after = set(channels.receive_buffer)
    kept = await channels.receive(behind)  # the busy socket's next receive still finds its event
    await channels.send(listening, {"type": "lifecycle.event", "n": 3})
    got = await asyncio.wait_for(receiving, 5)  # the listening socket still hears what comes next
    await channels.flush()
    return before, after, dropped, {"kept": kept, "got": got, "channels": (gone, listening, behind)}


def test_the_resync_drops_buffers_no_socket_reads_and_keeps_the_rest():
    before, after, dropped, seen = asyncio.run(_buffers_after_a_late_event_and_a_queued_one())
    gone, listening, behind = seen["channels"]
    assert {gone, listening, behind} <= before
    assert gone not in after  # the event for the socket that left is dropped with its buffer
    assert behind in after  # the busy socket's event is kept for it
    assert dropped >= 1  # (an empty buffer goes too: the layer makes it again on the next receive)
    assert seen["kept"]["n"] == 2
    assert seen["got"]["n"] == 3


def test_a_layer_without_buffers_is_left_alone():
    class InMemory:
        pass

    assert prune_receive_buffer(InMemory(), live=set()) == 0
