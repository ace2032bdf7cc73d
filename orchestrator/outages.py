"""Riding out a dependency's outage: which errors mean "a server is away for a while", how long to wait
before trying again, and logging that once instead of once per try.

Every long-running process (relay, generator, delivery, Celery tasks) treats these errors the same way: it
keeps what it holds, waits, and tries again. None of them exits because PostgreSQL, Redis or the Kafka
broker went away for a while.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field

import psycopg
import redis
from confluent_kafka import KafkaError, KafkaException
from django.db import InterfaceError, OperationalError

from orchestrator import liveness

# A server unreachable, restarting, or failing over. Anything else is a bug or a bad message, not an outage.
TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` says a server is away (so the work should wait and be tried again)."""
    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        return isinstance(error, KafkaError) and (error.retriable() or kafka_outage(error))
    return isinstance(exc, TRANSIENT)


# librdkafka's own codes for "no broker to talk to right now"; it reconnects by itself meanwhile.
_KAFKA_OUTAGE_CODES = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
}


def kafka_outage(error: KafkaError) -> bool:
    return error.code() in _KAFKA_OUTAGE_CODES


@dataclass
class Outage:
    """One dependency's outage as one process sees it.

    ``failed(exc)`` logs the first failure (and a reminder every ``remind_s`` while it lasts) and returns how
    long to wait before the next try: exponential with jitter, from ``first_s`` up to ``max_s``. ``ok()``
    ends the outage and logs how long it lasted.
    """

    what: str
    log: logging.Logger
    first_s: float = 0.2
    max_s: float = 5.0
    remind_s: float = 60.0
    since: float | None = field(default=None, init=False)
    failures: int = field(default=0, init=False)
    last_logged: float = field(default=0.0, init=False)

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException | str) -> float:
        liveness.beat()  # a process riding out an outage is alive
        now = time.monotonic()
        if self.since is None:
            self.since, self.last_logged = now, now
            self.log.warning("%s unavailable, retrying with backoff: %s", self.what, _describe(exc))
        elif now - self.last_logged >= self.remind_s:
            self.last_logged = now
            self.log.warning(
                "%s still unavailable after %.0f s (%d tries): %s", self.what, now - self.since, self.failures, exc
            )
        self.failures += 1
        delay = min(self.max_s, self.first_s * 2 ** min(self.failures - 1, 16))
        return random.uniform(delay / 2, delay)

    def ok(self) -> None:
        if self.since is None:
            return
        self.log.warning("%s back after %.1f s (%d tries)", self.what, time.monotonic() - self.since, self.failures)
        self.since, self.failures = None, 0


def _describe(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0] if text else ''}"
