"""The channel layer: Redis pub/sub between processes, fan-out in memory inside each realtime process.

A ``group_send`` (the relay's live events, a generator's deltas) is one ``PUBLISH`` on the group's Redis
channel. Each realtime process holds one subscriber connection, subscribed once to every group one of its
sockets is in, and puts each message it receives on the in-process queue of each of those sockets. So a
message costs one round trip to send and none per socket, nothing is stored in Redis, and a socket that
goes away leaves nothing behind (channels-redis' default layer makes ~4 round trips per ``group_send`` and
~4 per message received, and buffers in Redis; its pub/sub layer subscribes once per socket and serialises
every subscribe on one lock, which docs/performance.md measured).

1. ``group_add`` returns once Redis has confirmed the group's subscription, so a socket that joins and then
   reads the database misses nothing committed after the read. Joins that arrive together go out as one
   ``SUBSCRIBE``; a group whose last socket left is unsubscribed in the background.
2. The subscriber connection is checked with a ``PING`` when it has been quiet for ``health_check_s``. When
   it drops (Redis restarted, a network blip), the layer logs once, reconnects with backoff, subscribes
   again to every group it holds, and then tells its listeners (:meth:`FanOutLayer.on_resubscribed`) so
   sockets read from the database what was published meanwhile. A join while Redis is away fails at once
   with ``ConnectionError`` (the socket is told to try again later).
3. Each socket's queue holds ``capacity`` messages; past that its newest message is dropped and counted (the
   socket fills the gap from the database by ``seq``). Messages are decoded once and shared by the
   sockets of a group: consumers must not change them.

Only ``send`` to a channel of this process is supported: nothing here addresses another process's socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

import orjson
import redis.asyncio as aioredis
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from orchestrator import metrics
from orchestrator.outages import Outage, transient

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0


class FanOutLayer(BaseChannelLayer):
    extensions = ["groups", "flush"]

    def __init__(
        self,
        url: str,
        prefix: str = "rt:",
        capacity: int = 1000,
        health_check_s: float = 15.0,
        publisher: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(capacity=capacity, **kwargs)
        self.url = url
        self.prefix = prefix
        self.health_check_s = health_check_s
        self.publisher_options = publisher or {}
        self._loops: dict[asyncio.AbstractEventLoop, _Loop] = {}
        self._listeners: list[Callable[[], None]] = []

    def _here(self) -> _Loop:
        """This event loop's connections and sockets (a layer object outlives the loops of tests)."""
        loop = asyncio.get_running_loop()
        here = self._loops.get(loop)
        if here is None:
            for old in [old for old in self._loops if old.is_closed()]:
                del self._loops[old]
            here = self._loops[loop] = _Loop(self)
        return here

    def on_resubscribed(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` each time the subscriber connection is back after it was lost."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    # Channel layer API

    async def new_channel(self, prefix: str = "specific.") -> str:
        name = f"{prefix}{uuid.uuid4().hex}"
        self._here().channels[name] = asyncio.Queue(maxsize=self.capacity)
        return name

    async def receive(self, channel: str) -> dict:
        here = self._here()
        queue = here.channels.get(channel)
        if queue is None:
            raise RuntimeError(f"receive() on {channel!r}, which is not a channel of this process")
        try:
            return await queue.get()
        except asyncio.CancelledError:
            # Channels cancels the receive when its consumer ends: forget the channel (nothing to await).
            here.drop(channel)
            raise

    async def send(self, channel: str, message: dict) -> None:
        here = self._here()
        if channel not in here.channels:
            raise RuntimeError(f"send() to {channel!r}: this layer only sends to channels of this process")
        here.put(channel, message)

    async def forget(self, channel: str) -> None:
        """Drop ``channel`` and its groups. A consumer's channel goes when its receive is cancelled; a stream
        that reads its channel some other way (Server-Sent Events, a waiting request) says so here."""
        self._here().drop(channel)

    async def group_add(self, group: str, channel: str) -> None:
        await self._here().join(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self._here().leave(group, channel)

    def publication(self, group: str, message: dict) -> tuple[str, bytes]:
        """A ``group_send`` as the ``PUBLISH`` it is: the Redis channel and the data (a process with no event
        loop, the relay, publishes these on a client of its own: :mod:`realtime.fanout`)."""
        return self.prefix + group, orjson.dumps(message)

    async def group_send(self, group: str, message: dict) -> None:
        await self._here().publisher().publish(*self.publication(group, message))

    async def flush(self) -> None:
        here = self._loops.pop(asyncio.get_running_loop(), None)
        if here is not None:
            await here.close()


class _Loop:
    """One event loop's share of the layer: its sockets' queues, its groups, one subscriber connection."""

    def __init__(self, layer: FanOutLayer) -> None:
        self.layer = layer
        self.channels: dict[str, asyncio.Queue] = {}
        self.groups: dict[str, set[str]] = {}  # group → this process's channels in it
        self.member_of: dict[str, set[str]] = {}  # channel → its groups
        self.confirmed: set[str] = set()  # groups Redis has confirmed and not been asked to drop since
        self.subscribing: set[str] = set()  # groups whose SUBSCRIBE is on its way (no UNSUBSCRIBE goes meanwhile)
        self.waiting: dict[str, list[asyncio.Future]] = {}  # group → joins waiting for its confirmation
        self.to_subscribe: set[str] = set()
        self.to_unsubscribe: set[str] = set()
        self.flushing: asyncio.Task | None = None
        self.connection: aioredis.Connection | None = None
        self.down = False  # the connection was lost and is not back yet (joins fail at once meanwhile)
        self.task: asyncio.Task | None = None
        self.resubscribing: set[str] | None = None  # after a reconnect: groups to confirm before telling listeners
        self.outage = Outage("realtime: Redis (the channel layer's subscriber connection)", log)
        self._publisher: aioredis.Redis | None = None

    def publisher(self) -> aioredis.Redis:
        if self._publisher is None:
            self._publisher = aioredis.Redis.from_url(self.layer.url, **self.layer.publisher_options)
        return self._publisher

    # Sockets and groups

    def put(self, channel: str, message: dict) -> None:
        try:
            self.channels[channel].put_nowait(message)
        except asyncio.QueueFull:
            metrics.REALTIME_DROPPED.inc()
            raise ChannelFull(channel) from None

    def drop(self, channel: str) -> None:
        self.channels.pop(channel, None)
        for group in self.member_of.pop(channel, set()):
            self.leave(group, channel)

    async def join(self, group: str, channel: str) -> None:
        if channel not in self.channels:
            raise RuntimeError(f"group_add() of {channel!r}, which is not a channel of this process")
        self.groups.setdefault(group, set()).add(channel)
        self.member_of.setdefault(channel, set()).add(group)
        if group in self.confirmed:
            return
        self._start()
        if self.down:
            raise ConnectionError("the channel layer's Redis is unreachable")
        waiter = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(group, []).append(waiter)
        if group not in self.subscribing:  # else the SUBSCRIBE on its way confirms this join too
            self.to_subscribe.add(group)
            self._flush_soon()
        try:
            async with asyncio.timeout(JOIN_TIMEOUT_S):
                await waiter
        except BaseException:
            with contextlib.suppress(ValueError):
                self.waiting.get(group, []).remove(waiter)
            raise

    def leave(self, group: str, channel: str) -> None:
        if channel in self.member_of:
            self.member_of[channel].discard(group)
        members = self.groups.get(group)
        if members is None:
            return
        members.discard(channel)
        if not members:
            del self.groups[group]
            for waiter in self.waiting.pop(group, []):
                if not waiter.done():
                    waiter.cancel()
            self.confirmed.discard(group)  # a join from now on waits for a new confirmation
            self.to_subscribe.discard(group)
            if self.resubscribing is not None:  # no confirmation to wait for: nobody follows it any more
                self.resubscribing.discard(group)
                self._tell_listeners_if_resubscribed()
            if self.connection is not None and group not in self.subscribing:  # else once it is confirmed
                self.to_unsubscribe.add(group)
                self._flush_soon()

    # The subscriber connection

    def _start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="channel-layer-subscriber")

    async def _run(self) -> None:
        """Connect, then write subscriptions and read messages until the connection fails; then again."""
        lost = False
        while True:
            try:
                self.connection = await self._connect()
                self.down = False
                if lost:
                    self.resubscribing = set(self.groups)
                    self._tell_listeners_if_resubscribed()
                self.to_subscribe = set(self.groups)
                self.to_unsubscribe.clear()
                self._flush_soon()
                self.outage.ok()
                await self._read(self.connection)
            except Exception as exc:
                if not transient(exc):
                    log.exception("realtime: the channel layer's subscriber connection failed")
                await self._lost(exc)
                lost = True
                await asyncio.sleep(self.outage.failed(exc))

    async def _connect(self) -> aioredis.Connection:
        pool = aioredis.ConnectionPool.from_url(self.layer.url)
        connection = pool.make_connection()
        await connection.connect()
        return connection

    async def _lost(self, exc: BaseException) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
        self.down = True
        self.confirmed.clear()
        self.subscribing.clear()
        self.resubscribing = None
        for waiters in self.waiting.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(ConnectionError(f"the channel layer's Redis went away: {exc}"))
        self.waiting.clear()

    def _flush_soon(self) -> None:
        """Send the subscriptions asked for since the last time, in one command each way, from one task."""
        if self.connection is not None and (self.flushing is None or self.flushing.done()):
            self.flushing = asyncio.create_task(self._flush(self.connection))

    async def _flush(self, connection: aioredis.Connection) -> None:
        await asyncio.sleep(0)  # let the joins and leaves of this turn of the loop gather first
        while connection is self.connection and (self.to_subscribe or self.to_unsubscribe):
            unsubscribe = [group for group in self.to_unsubscribe if group not in self.groups]
            subscribe = [group for group in self.to_subscribe if group in self.groups and group not in self.subscribing]
            self.to_unsubscribe.clear()
            self.to_subscribe.clear()
            try:
                if unsubscribe:
                    await connection.send_command("UNSUBSCRIBE", *(self.layer.prefix + group for group in unsubscribe))
                if subscribe:
                    self.subscribing.update(subscribe)
                    await connection.send_command("SUBSCRIBE", *(self.layer.prefix + group for group in subscribe))
            except Exception as exc:  # the reader finds the connection gone too, and starts over
                log.debug("realtime: could not send subscriptions: %s", exc)
                await connection.disconnect(nowait=True)
                return

    async def _read(self, connection: aioredis.Connection) -> None:
        pinged = False
        while True:
            # Under RESP3 (redis-py's default) what a subscription receives comes as push messages.
            reply = await connection.read_response(
                timeout=self.layer.health_check_s, disconnect_on_error=False, push_request=True
            )
            if reply is None:  # quiet for health_check_s: ask, and give up on the connection if still quiet
                if pinged:
                    raise TimeoutError(f"Redis did not answer a PING within {self.layer.health_check_s} s")
                await connection.send_command("PING")
                pinged = True
                continue
            pinged = False
            kind = reply[0] if isinstance(reply, list) else reply  # PING's answer is b"PONG" under RESP3
            if kind == b"message":
                self._fan_out(reply[1], reply[2])
            elif kind == b"subscribe":
                self._confirmed(reply[1].decode()[len(self.layer.prefix) :])

    def _fan_out(self, redis_channel: bytes, data: bytes) -> None:
        members = self.groups.get(redis_channel.decode()[len(self.layer.prefix) :])
        if not members:
            return  # the last socket left while the message was on its way
        message = orjson.loads(data)
        for channel in list(members):
            with contextlib.suppress(ChannelFull):
                self.put(channel, message)

    def _confirmed(self, group: str) -> None:
        self.subscribing.discard(group)
        if group in self.groups:
            self.confirmed.add(group)
            for waiter in self.waiting.pop(group, []):
                if not waiter.done():
                    waiter.set_result(None)
        else:  # its last socket left while the SUBSCRIBE was on its way
            self.to_unsubscribe.add(group)
            self._flush_soon()
        if self.resubscribing is not None:
            self.resubscribing.discard(group)
            self._tell_listeners_if_resubscribed()

    def _tell_listeners_if_resubscribed(self) -> None:
        if self.resubscribing is None or self.resubscribing:
            return
        self.resubscribing = None
        log.info("realtime: the channel layer's subscriptions are back; sockets catch up from the database")
        for listener in self.layer._listeners:
            try:
                listener()
            except Exception:
                log.exception("realtime: a listener of the channel layer's reconnect failed")

    async def close(self) -> None:
        for task in (self.task, self.flushing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.connection is not None:
            await self.connection.disconnect()
        if self._publisher is not None:
            await self._publisher.aclose()
