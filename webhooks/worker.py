"""The delivery process: webhook attempts, many in flight on one event loop.

A pipeline of three phases, each batched:

1. Claim: what is due, in one transaction per batch (``services.deliveries_claim``: a lease per delivery,
   the per-endpoint in-flight cap kept across every worker).
2. Attempt: each claimed delivery is signed and sent as its own task, on connections pooled per origin
   (:class:`webhooks.sender.Sender`), every attempt bounded by ``WEBHOOK_TIMEOUT_S``.
3. Record: outcomes are written in group commits (``services.deliveries_record``: the lifecycle's step and
   move, the attempt's row, the delivery's next state, one transaction for whatever finished meanwhile).

Waking: a new or resent delivery NOTIFYs ``services.DUE_CHANNEL`` when its transaction commits; a retry
scheduled for later is found by sleeping until the earliest one is due (at most ``POLL_S``).

Leases: a delivery is ``sending`` under a lease of ``WEBHOOK_TIMEOUT_S + WEBHOOK_LEASE_GRACE_S``; an attempt
is over within ``WEBHOOK_TIMEOUT_S``, so only a worker that stopped leaves one to expire, and every worker
puts those back on their schedule (``services.deliveries_release_expired``).

Outages: while PostgreSQL is away every phase waits for it and goes on (``db.patiently``); attempts
already made keep their outcome until it can be recorded. SIGTERM stops claiming, finishes the attempts in
hand and records them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.utils import timezone

from orchestrator import db, liveness, logs, metrics, telemetry
from orchestrator.process import GracefulExit
from webhooks import sender, services

log = logging.getLogger(__name__)

POLL_S = 1.0  # at most this long between looks for due deliveries, woken or not
RELEASE_EVERY_S = 5.0
CLAIM_MOST = 200
DB_THREADS = 4


class _Stopping(Exception):
    """Asked to stop while waiting for PostgreSQL."""


STOP_CHECK_S = 0.5


class DeliveryWorker:
    def __init__(self, *, concurrency: int, stop: GracefulExit) -> None:
        self.concurrency = concurrency
        self.stop = stop
        self.tasks: set[asyncio.Task] = set()
        self.wake = asyncio.Event()
        # Something due was left unclaimed (an endpoint at its cap, or no room here): an attempt that ends
        # may make room for it, so it wakes the loop.
        self.held_back = False
        self.made = 0
        self.recorder = db.GroupCommit(
            lambda made: services.deliveries_record(made=made),
            lambda made: services.deliveries_record(made=[made])[0],
            what="webhook attempts",
        )

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(DB_THREADS, thread_name_prefix="db"))
        self.sender = sender.Sender(
            per_origin=max(settings.WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT, 1) * 2, ca_bundle=settings.WEBHOOK_CA_BUNDLE
        )
        self.recorder.start()
        background = [asyncio.create_task(self._listen()), asyncio.create_task(self._release_expired())]
        try:
            with contextlib.suppress(_Stopping):
                await self._claim_until_stopped()
            if self.tasks:
                log.info("delivery: stopping, finishing %d attempts in flight", len(self.tasks))
                await asyncio.wait(self.tasks, timeout=settings.WEBHOOK_TIMEOUT_S + 5)
        finally:
            for task in background:
                task.cancel()
            self.recorder.stop()
            await self.sender.aclose()
        return self.made

    async def _claim_until_stopped(self) -> None:
        while not self.stop.requested:
            liveness.beat()
            self.wake.clear()
            room = self.concurrency - len(self.tasks)
            self.held_back = room <= 0
            claimed = []
            if room > 0:
                claimed = await self._patiently(services.deliveries_claim, limit=min(room, CLAIM_MOST))
                for delivery in claimed:
                    self._start(delivery)
            if claimed and len(claimed) == min(room, CLAIM_MOST):
                continue  # there may be more due at once
            await self._sleep(await self._until_due() if room > 0 else POLL_S)

    async def _patiently(self, fn, /, **kwargs):
        """``db.patiently``, given up when the process is asked to stop: PostgreSQL may be away for longer
        than the stop may wait, and what is not claimed stays due for whoever runs next."""
        call = asyncio.ensure_future(db.patiently(fn, **kwargs))
        while not call.done():
            await asyncio.wait({call}, timeout=STOP_CHECK_S)
            if not call.done() and self.stop.requested:
                call.cancel()
                raise _Stopping
        return call.result()

    async def _until_due(self) -> float:
        """How long to sleep: until the earliest pending delivery is due, at most ``POLL_S``. One that is due
        already is held back by its endpoint's cap: an attempt that ends wakes us sooner."""
        due = await self._patiently(services.deliveries_next_due)
        if due is None:
            return POLL_S
        wait = (due - timezone.now()).total_seconds()
        self.held_back = wait <= 0
        return POLL_S if wait <= 0 else min(wait, POLL_S)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)

    def _start(self, claimed: services.Claimed) -> None:
        task = asyncio.create_task(self._attempt(claimed))
        self.tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self.tasks.discard(t)
            self.made += 1
            if self.held_back:
                self.wake.set()

        task.add_done_callback(done)

    async def _attempt(self, claimed: services.Claimed) -> None:
        logs.bind(
            lifecycle_id=str(claimed.lifecycle_id or ""),
            project_id=str(claimed.project_id),
            traceparent=claimed.traceparent,
        )
        started_at = timezone.now()
        if not claimed.endpoint_enabled:
            result = sender.AttemptResult(
                outcome="failed", latency_ms=0, error=f"endpoint disabled: {claimed.endpoint_disabled_reason}"
            )
        elif not claimed.secrets:
            error = "the endpoint's signing secret cannot be decrypted (SECRETS_ENCRYPTION_KEYS lacks its key)"
            result = sender.AttemptResult(outcome="failed", latency_ms=0, error=error)
        else:
            headers = services.attempt_headers(claimed, started_at)
            # Each attempt is a span of the lifecycle's trace; the receiver gets the span's own traceparent.
            with telemetry.span("webhook.attempt", parent=claimed.traceparent, attempt=claimed.attempt) as span:
                headers["traceparent"] = span
                result = await self.sender.send(
                    claimed.url, headers=headers, body=claimed.body, timeout=settings.WEBHOOK_TIMEOUT_S
                )
        metrics.WEBHOOK_ATTEMPTS.labels(status_class=metrics.status_class(result.status_code, result.outcome)).inc()
        if result.outcome != "succeeded":
            log.info("webhook attempt %d to %s: %s %s", claimed.attempt, claimed.url, result.outcome, result.error)
        try:
            await self.recorder.put(services.Made(claimed=claimed, started_at=started_at, result=result))
        except Exception:
            # Left sending: its lease runs out and the attempt is made again on the schedule.
            log.exception("delivery: recording attempt %d of %s failed", claimed.attempt, claimed.id)

    async def _listen(self) -> None:
        await db.listen({services.DUE_CHANNEL: lambda _: self.wake.set()}, "delivery")

    async def _release_expired(self) -> None:
        while True:
            await asyncio.sleep(RELEASE_EVERY_S)
            try:
                if await db.patiently(services.deliveries_release_expired):
                    self.wake.set()
            except Exception:
                log.exception("delivery: releasing expired leases failed")
