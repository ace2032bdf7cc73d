"""API keys as each request reads them: from this process's memory, as long as a version in Redis says
nothing about keys or projects changed since they were read.

Every request authenticates by its key's prefix, and every request of a project reads the same key and
project rows (its limits, its budget, its routing). Read from PostgreSQL that is a query per request. Here the
rows read once are kept, stamped with the version Redis held before they were read. A change (a key revoked,
a project's settings saved) drops what this process kept at once and, once its transaction commits, moves
the version on for every other process, so a revoked key is refused by the next request anywhere. Reading
the version is one ``GET``, a fraction of the query it saves.

What is kept also goes stale after ``MAX_AGE_S``, for a change whose version bump was lost (Redis away at that
moment and back with its old data). While Redis is away, nothing is read from memory.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from django.db import transaction

from lifecycle import store
from lifecycle.models import ApiKey
from lifecycle.throttling import redis_client
from orchestrator.outages import Outage

log = logging.getLogger(__name__)
_outage = Outage("API key cache: Redis (reading keys from PostgreSQL meanwhile)", log)

VERSION_KEY = "apikeys:version"
MAX_AGE_S = 60.0
MAX_KEYS = 10_000  # a process serving more keys than this starts again from empty

_AWAY = object()
_kept: dict[str, tuple[ApiKey, bytes | None, float]] = {}  # prefix → (key with its project, version, when)
_lock = threading.Lock()


def active_key(prefix: str) -> ApiKey | None:
    """The unrevoked key with this prefix and its project (:func:`lifecycle.store.active_key`), from memory
    when nothing changed since it was read. Callers must not change what they get."""
    version = _version()
    if version is _AWAY:
        return store.active_key(prefix)
    kept = _kept.get(prefix)
    if kept is not None and kept[1] == version and time.monotonic() - kept[2] < MAX_AGE_S:
        return kept[0]
    key = store.active_key(prefix)
    with _lock:
        if key is None:
            _kept.pop(prefix, None)
            return None
        if len(_kept) >= MAX_KEYS:
            _kept.clear()
        _kept[prefix] = (key, version, time.monotonic())
    return key


def changed(**_signal) -> None:
    """A key or a project changed: forget what this process kept now, and make every process forget it
    once the change commits (before that, another process could read the old rows again). Also the
    receiver of the models' save and delete signals (lifecycle/apps.py)."""
    forget()
    transaction.on_commit(_move_version)


def forget() -> None:
    with _lock:
        _kept.clear()


def _version():
    try:
        version = redis_client().get(VERSION_KEY)
    except redis.RedisError as exc:
        _outage.failed(exc)
        return _AWAY
    _outage.ok()
    return version


def _move_version() -> None:
    forget()
    try:
        redis_client().incr(VERSION_KEY)
    except redis.RedisError as exc:
        # Other processes keep what they read for MAX_AGE_S at most.
        log.warning("API key cache: could not tell other processes of a change (%s)", exc)
