"""The generator process: a Kafka consumer group on ``lifecycle.requests`` running many generations at once.

At-least-once: a message's offset is committed only after its generation is recorded in the database,
and only up to the oldest message still in flight (see :class:`OffsetTracker`). A message that is
redelivered finds its lifecycle already claimed or finished, and does nothing.

Claims: a consumed batch is claimed in one transaction (``services.generation_claim_many``); each claimed
generation then runs as its own task, and outputs are stored in group commits (:class:`db.GroupCommit`).

Fairness: what is consumed waits in a :class:`~lifecycle.scheduling.FairQueue` until a slot is free, and
starts in its order (projects in turn, tiers by weight), so one project's backlog does not make another's
requests wait behind it. No project holds more than ``GENERATOR_PROJECT_SHARE`` of the slots: with a model
of constant latency, slots taken together free together, and a newcomer would otherwise wait a whole
model latency for the next of them. The generator reads up to ``GENERATOR_LOOKAHEAD`` requests ahead of what it runs,
which bounds both its memory and how far back in Kafka it can see; waiting requests count as in flight for
the offsets, so a generator that dies loses none of them.

Backpressure: with ``GENERATOR_LOOKAHEAD`` requests waiting the consumer pauses its partitions (while still
polling, so the group keeps it); lag builds in Kafka and the API never waits.

Leases: every ``GENERATION_LEASE_S / 3`` the generator renews the leases of all it runs in one statement;
a generation whose lease another worker took over (this one was cut off for longer than the lease) is
abandoned, and its outcome would be refused anyway (fenced by the claim's token). So a generation longer
than the lease runs once.

Outages: while PostgreSQL is away each generation waits at its next database step and goes on when it is
back (``db.patiently``); while the broker is away librdkafka reconnects by itself. Either is logged once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import orjson
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, Message, TopicPartition
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

from lifecycle import generation, kafka, limits, outbox, scheduling, services
from lifecycle.models import Lifecycle
from orchestrator import db, liveness, logs, metrics, telemetry
from orchestrator.outages import Outage, transient
from orchestrator.process import GracefulExit

log = logging.getLogger(__name__)

GROUP_ID = "lifecycle-generators"
COMMIT_EVERY_S = 0.5
STOP_GRACE_S = 30.0  # how long a stopping generator lets the generations in flight end


class PoisonMessage(Exception):
    pass


class OffsetTracker:
    """Which offset each partition may commit: everything before the oldest message still in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, int], set[int]] = {}
        self._next: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}

    def started(self, topic: str, partition: int, offset: int) -> None:
        with self._lock:
            self._in_flight.setdefault((topic, partition), set()).add(offset)
            self._next[(topic, partition)] = max(self._next.get((topic, partition), 0), offset + 1)

    def finished(self, topic: str, partition: int, offset: int) -> None:
        with self._lock:
            self._in_flight.get((topic, partition), set()).discard(offset)

    def committable(self) -> list[TopicPartition]:
        """Offsets that moved since the last call."""
        with self._lock:
            out = []
            for tp, next_offset in self._next.items():
                in_flight = self._in_flight.get(tp)
                offset = min(in_flight) if in_flight else next_offset
                if self._committed.get(tp) != offset:
                    self._committed[tp] = offset
                    out.append(TopicPartition(tp[0], tp[1], offset))
            return out

    def uncommitted(self, offsets: list[TopicPartition]) -> None:
        """A commit of ``offsets`` failed: offer them again next time."""
        with self._lock:
            for p in offsets:
                if self._committed.get((p.topic, p.partition)) == p.offset:
                    del self._committed[(p.topic, p.partition)]

    def forget(self, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for p in partitions:
                for table in (self._in_flight, self._next, self._committed):
                    table.pop((p.topic, p.partition), None)


@dataclass
class Request:
    """A consumed generation request, decoded once, waiting for its turn. ``lifecycle_id`` is ``None`` for
    one that cannot be decoded (its task dead-letters it)."""

    message: Message
    headers: dict[str, str]
    lifecycle_id: uuid.UUID | None
    model: str = ""
    tokens: int = 0
    poison: str = ""
    # When its pending lease was last known to start: published (the message's time), or renewed since.
    leased_at: float = 0.0

    @property
    def project(self) -> str:
        return self.headers.get("project-id", "")


def parse_request(message: Message) -> Request:
    headers = kafka.decode_headers(message.headers())
    kind, milliseconds = message.timestamp()
    published = milliseconds / 1000 if kind != TIMESTAMP_NOT_AVAILABLE else time.time()
    try:
        body = orjson.loads(message.value() or b"")
        lifecycle_id = uuid.UUID(str(body["lifecycle_id"]))
        # Requests published before the model was part of them decide nothing by it.
        model, tokens = str(body.get("model") or ""), int(body.get("tokens") or 0)
        return Request(message, headers, lifecycle_id, model, tokens, leased_at=published)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return Request(
            message, headers, None, poison=f"undecodable generation request: {exc.__class__.__name__}: {exc}"
        )


class Generator:
    def __init__(self, *, concurrency: int, stop: GracefulExit) -> None:
        self.concurrency = concurrency
        self.stop = stop
        self.tracker = OffsetTracker()
        self.waiting: scheduling.FairQueue[Request] = scheduling.FairQueue(
            scheduling.tier_weights(settings.GENERATION_TIER_WEIGHTS)
        )
        # Provider limits and project caps, asked before a claim; the caps (project id → generations in
        # flight it may have across generators), refreshed from the database every GENERATOR_CAPS_REFRESH_S.
        self.gate = None
        self.caps: dict[str, int] = {}
        self.held_wake: asyncio.TimerHandle | None = None
        self.lookahead = max(1, settings.GENERATOR_LOOKAHEAD)
        # Slots held per project (generations dispatched: being admitted, claimed or running), and the most
        # one project may hold: the rest stay open, so another project's request starts at once instead of
        # waiting for a slot to free.
        self.held: collections.Counter[str] = collections.Counter()
        self.project_most = max(1, math.floor(concurrency * settings.GENERATOR_PROJECT_SHARE))
        self.client: httpx.AsyncClient | None = None  # the provider client, once run() has opened it
        self._gauged: set[tuple[str, str]] = set()
        self.tasks: set[asyncio.Task] = set()
        # Lifecycle id → its generation (to abandon on cancel), the claim's fencing token (to renew with) and
        # its project (to renew its cap's lease with).
        self.running: dict[str, tuple[asyncio.Task, int, str]] = {}
        self.abandoned: dict[str, str] = {}  # lifecycle id → why its generation was cancelled
        self.broker = Outage("generator: Kafka", log)
        self.handled = 0
        # Every call into librdkafka happens on this one thread, rebalance callbacks included.
        self.kafka_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka")
        self.consumer = Consumer(kafka.consumer_config(GROUP_ID))
        self.idle = kafka.Idle(self.consumer)  # paused at capacity (held) or with nothing coming (asleep)
        # Outputs stored in group commits: one transaction for whatever finished while the last was written.
        self.results = db.GroupCommit(
            lambda results: services.generation_succeed_many(results=results),
            lambda result: services.generation_succeed(**result),
            what="generation results",
        )

    async def _kafka(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.kafka_thread, fn, *args)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(p.topic, p.partition) for p in partitions}
        dropped = self.waiting.drop(lambda request: (request.message.topic(), request.message.partition()) in revoked)
        for request in dropped:  # their next owner runs them
            message = request.message
            self.tracker.finished(message.topic(), message.partition(), message.offset())
        self._commit_sync()
        self.tracker.forget(partitions)
        self.idle.forget(consumer, partitions)

    def _commit_sync(self) -> None:
        offsets = self.tracker.committable()
        if offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except Exception as exc:  # a commit lost here is redelivered: handlers are idempotent
                self.tracker.uncommitted(offsets)
                self.broker.failed(exc)

    async def run(self) -> int:
        await self._kafka(lambda: self.consumer.subscribe([outbox.TOPIC_REQUESTS], on_revoke=self._on_revoke))
        loop = asyncio.get_running_loop()
        # db.in_thread runs on the loop's default executor (min(32, CPUs + 4) threads unless told).
        loop.set_default_executor(ThreadPoolExecutor(settings.GENERATOR_DB_THREADS, thread_name_prefix="db"))
        last_commit = loop.time()
        listener = asyncio.create_task(self._listen())
        self.results.start()
        self.gate = limits.gate()
        renewer = asyncio.create_task(self._renew_leases())
        caps = asyncio.create_task(self._refresh_caps())
        waiting_renewer = asyncio.create_task(self._renew_waiting())
        # httpx's interface over aiohttp's connections and C HTTP parser: 0.89x the generator's CPU of httpcore
        # and h11 (docs/performance.md). One pool for every slot: aiohttp takes and returns a connection in
        # constant time, where httpcore scanned its whole pool (so the generator once kept a pool per 64
        # slots, taken in turn: with many slots at a low rate, each call found its pool's connections expired, and
        # opened a new one, against a real provider with a TLS handshake).
        slots = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(transport=AiohttpTransport(limits=slots)) as self.client:
            while not self.stop.requested:
                liveness.beat()
                full = len(self.waiting) >= self.lookahead
                if full != self.idle.held:
                    await self._kafka(self.idle.hold, full)
                await self.idle.doze(self._kafka)
                room = max(1, self.lookahead - len(self.waiting))
                messages = await self._kafka(self.idle.consume, min(room, 500), 0.1)
                for message in messages:
                    if message.error():
                        kafka.note_consume_error(message.error(), self.broker, "generator")
                        continue
                    self.broker.ok()
                    self._wait(message)
                self._dispatch()
                if loop.time() - last_commit >= COMMIT_EVERY_S:
                    await self._kafka(self._commit_sync)
                    self._gauge_waiting()
                    last_commit = loop.time()
            if self.tasks:
                log.info("generator: stopping, finishing %d generations in flight", len(self.tasks))
                await self._finish_in_flight()
        listener.cancel()
        renewer.cancel()
        caps.cancel()
        waiting_renewer.cancel()
        self.results.stop()
        await self._kafka(self._commit_sync)
        await self._kafka(self.consumer.close)
        self.kafka_thread.shutdown()
        return self.handled

    async def _finish_in_flight(self) -> None:
        """Let the generations in flight end, for up to ``STOP_GRACE_S``, but not while PostgreSQL is away:
        none could record its outcome, and a supervisor would kill this process before the outage ended. What
        is cut off runs again elsewhere: its offset stays uncommitted and its lease expires."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE_S
        while self.tasks and not db.away() and (left := deadline - loop.time()) > 0:
            await asyncio.wait(self.tasks, timeout=min(0.5, left))
        if self.tasks:
            why = "PostgreSQL is away" if db.away() else f"they took longer than {STOP_GRACE_S:.0f} s"
            log.warning("generator: stopping with %d generations in flight (%s)", len(self.tasks), why)

    def _wait(self, message: Message) -> None:
        """A consumed request waits for a slot, in its project's and tier's turn. Its offset stays
        uncommitted from now until its generation ends."""
        self.tracker.started(message.topic(), message.partition(), message.offset())
        request = parse_request(message)
        self._queue(request)

    def _queue(self, request: Request, *, front: bool = False) -> None:
        tier = request.headers.get("subscriber-tier") or None
        self.waiting.put(request, project=request.project, tier=tier, model=request.model, front=front)

    def _dispatch(self) -> None:
        """Start as many waiting requests as there are free slots, in the fair queue's order, passing over
        the models and projects on hold: admitted (provider limits, project caps), claimed in one
        transaction, then each generation as its own task. Called when requests arrive, when one ends, and
        when a hold ends."""
        free = self.concurrency - self.held.total()
        if free <= 0 or not len(self.waiting) or self.client is None or self.stop.requested:
            return  # (stopping: what waits is left uncommitted, for the partitions' next owner)
        held_projects, held_models = self.gate.holds()
        batch = self.waiting.take(
            min(free, 500),
            held_projects=held_projects,
            held_models=held_models,
            room=lambda project: self.project_most - self.held[project],
        )
        if not batch:
            self._wake_when_released()
            return
        self.held.update(request.project for request in batch)
        task = asyncio.create_task(self._admit_claim_and_start(batch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _wake_when_released(self) -> None:
        """Dispatch again when the first hold ends (one timer at a time)."""
        delay = self.gate.next_release()
        if delay is None or (self.held_wake is not None and not self.held_wake.cancelled()):
            return

        def wake() -> None:
            self.held_wake = None
            self._dispatch()

        self.held_wake = asyncio.get_running_loop().call_later(delay + 0.001, wake)

    async def _admit(self, batch: list[Request]) -> list[Request]:
        """The batch's requests that may start now; the others go back to their place in the queue, their
        model or project held until Redis says (limits.Gate)."""
        admitted, back = [], []
        project_held, model_held = self.gate.holds()
        for request in batch:
            if request.project in project_held or request.model in model_held:
                back.append(request)
                continue
            if request.lifecycle_id is not None:
                admission = await self.gate.admit(
                    model=request.model, tokens=request.tokens, project=request.project,
                    cap=self.caps.get(request.project), member=str(request.lifecycle_id),
                )  # fmt: skip
                if admission.outcome != limits.ADMITTED:
                    back.append(request)
                    project_held, model_held = self.gate.holds()  # the refusal held its model or project
                    continue
            admitted.append(request)
        for request in reversed(back):
            self._queue(request, front=True)
        if back:
            self.held.subtract(request.project for request in back)
            self._wake_when_released()
        return admitted

    async def _renew_waiting(self) -> None:
        """Keep the pending leases of the requests waiting here, so that the reconciler does not publish
        them again as lost (every duplicate would be admitted, claimed for nothing, and counted against its
        model's limit): each whose lease is half gone is renewed, all in one statement a round."""
        every = max(1.0, settings.RECONCILE_AFTER_S / 6)
        while True:
            await asyncio.sleep(every)
            now = time.time()
            due = [
                r for r in self.waiting.items() if r.lifecycle_id and r.leased_at < now - settings.RECONCILE_AFTER_S / 2
            ]
            if not due:
                continue
            with contextlib.suppress(Exception):  # tried again next round; the database may be away
                await db.in_thread(services.generation_waiting_renew)(lifecycle_ids=[r.lifecycle_id for r in due])
                for request in due:
                    request.leased_at = now

    async def _refresh_caps(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # kept as they were while the database is away
                self.caps = await db.in_thread(services.project_caps)()
            await asyncio.sleep(settings.GENERATOR_CAPS_REFRESH_S)

    def _gauge_waiting(self) -> None:
        waiting = self.waiting.waiting()
        for key in self._gauged - set(waiting):
            metrics.GENERATIONS_WAITING.labels(*key).set(0)
        for key, count in waiting.items():
            metrics.GENERATIONS_WAITING.labels(*key).set(count)
        self._gauged = set(waiting)

    async def _admit_claim_and_start(self, batch: list[Request]) -> None:
        batch = await self._admit(batch)
        claims = await self._claim(batch)
        for request in batch:
            self._start(request, self.client, claims)

    async def _claim(self, requests: list[Request]) -> dict[str, Lifecycle] | None:
        """The batch's claims by lifecycle id; ``None`` if the batch could not be claimed at once (each
        message then claims its own, and meets whatever made the batch fail on its own)."""
        ids = [request.lifecycle_id for request in requests if request.lifecycle_id is not None]
        if not ids:
            return {}
        try:
            claims = await db.patiently(services.generation_claim_many, lifecycle_ids=ids)
        except Exception:
            log.exception("generator: claiming a batch of %d failed; claiming one at a time", len(ids))
            return None
        now = time.time()
        for lifecycle in claims.values():
            tier = self.waiting.tier_of(lifecycle.subscriber.get("tier"))
            metrics.GENERATION_WAIT_SECONDS.labels(tier=tier).observe(max(0.0, now - lifecycle.created_at.timestamp()))
        return claims

    def _start(self, request: Request, client: httpx.AsyncClient, claims: dict[str, Lifecycle] | None) -> None:
        message = request.message
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        task = asyncio.create_task(self._handle(request, client, claims))
        self.tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self.tasks.discard(t)
            self.tracker.finished(topic, partition, offset)
            self.handled += 1
            self.held[request.project] -= 1
            if self.held[request.project] <= 0:
                del self.held[request.project]
            if request.project in self.caps and request.lifecycle_id is not None:
                self.gate.release_project(request.project)
                release = asyncio.create_task(self.gate.release(request.project, str(request.lifecycle_id)))
                self.tasks.add(release)
                release.add_done_callback(self.tasks.discard)
            self._dispatch()  # its slot goes to whoever's turn it is

        task.add_done_callback(done)

    def _abandon(self, lifecycle_id: str, reason: str) -> None:
        held = self.running.get(lifecycle_id)
        if held is not None:
            self.abandoned[lifecycle_id] = reason
            held[0].cancel()

    async def _listen(self) -> None:
        """Abandon a generation the moment its lifecycle is cancelled (NOTIFY from the cancel service), and
        fetch again when the outbox has something coming (kafka.Idle)."""
        await db.listen(
            {services.CANCEL_CHANNEL: lambda lifecycle_id: self._abandon(lifecycle_id, "cancelled"),
             outbox.NOTIFY_CHANNEL: lambda _: self.idle.wake()},
            "generator",
        )  # fmt: skip

    async def _renew_leases(self) -> None:
        """Keep the leases of every generation in flight, in one statement each round; abandon those another
        worker reclaimed (this one could not renew in time: the database or this process stalled)."""
        every = max(0.5, settings.GENERATION_LEASE_S / 3)
        while True:
            await asyncio.sleep(every)
            held = {lifecycle_id: token for lifecycle_id, (_, token, _) in self.running.items()}
            if not held:
                continue
            # Tried again at once on another connection, not next round: after PostgreSQL restarted, each
            # database thread finds its connection broken once, and the leases must not run out meanwhile.
            lost = await db.patiently(services.generation_leases_renew, held=held)
            capped: dict[str, list[str]] = {}
            for lifecycle_id, (_, _, project) in self.running.items():
                if project in self.caps:
                    capped.setdefault(project, []).append(lifecycle_id)
            await self.gate.renew(capped)
            for lifecycle_id in lost:
                log.warning("generator: another worker reclaimed %s; abandoning its generation here", lifecycle_id)
                self._abandon(lifecycle_id, "lease lost to another worker")

    async def _handle(self, request: Request, client: httpx.AsyncClient, claims: dict[str, Lifecycle] | None) -> None:
        message, headers = request.message, request.headers
        logs.bind(
            lifecycle_id=(message.key() or b"").decode(errors="replace"),
            project_id=headers.get("project-id"),
            traceparent=headers.get("traceparent"),
        )
        try:
            if request.lifecycle_id is None:
                raise PoisonMessage(request.poison)
            lifecycle_id = request.lifecycle_id
            if claims is None:
                lifecycle = await db.patiently(services.generation_claim, lifecycle_id=lifecycle_id)
            else:
                lifecycle = claims.pop(str(lifecycle_id), None)  # a second message for it finds nothing
            if lifecycle is None:
                log.info("generator: nothing to do (already claimed, finished or cancelled)")
                return
            key = str(lifecycle_id)
            self.running[key] = (asyncio.current_task(), lifecycle.attempts, request.project)
            log.info("generator: generating with %s", lifecycle.model)
            try:
                with telemetry.span("lifecycle.generate", parent=lifecycle.traceparent, lifecycle_id=key):
                    await generation.generate(
                        lifecycle,
                        client=client,
                        succeed=lambda **result: self.results.put(result),
                        admitted=(request.model, request.tokens),
                    )
            except asyncio.CancelledError:
                if self.stop.requested:
                    raise
                await db.patiently(
                    services.record_event,
                    lifecycle_id=lifecycle_id,
                    event="generation.abandoned",
                    payload={"reason": self.abandoned.get(key, "cancelled")},
                )
            finally:
                self.running.pop(key, None)
                self.abandoned.pop(key, None)
        except Exception as exc:  # a message no handler can process must not stop the others
            if transient(exc):
                # A server away (not the database, which is waited for): no fault of the message, and what was
                # not recorded is re-driven by the reconciler once the lease runs out.
                log.error("generator: a server is unavailable while handling %s: %s", message.key(), exc)
                return
            log.exception("generator: dead-lettering message %s", message.key())
            await db.patiently(
                services.message_dead_letter,
                source_topic=message.topic(),
                key=(message.key() or b"").decode(errors="replace"),
                value=message.value() or b"",
                headers=headers,
                reason=str(exc) or exc.__class__.__name__,
            )
