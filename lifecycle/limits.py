"""Provider limits shared by every generator process (shared/ARCHITECTURE.md, Flow control): a provider's
``429`` pauses that model for all of them until its ``Retry-After`` has passed, instead of each generation
meeting the same 429 in turn and backing off on its own.

The pause lives in Redis (``provider-pause:<provider/model>``, expiring when it ends), so a generator that
starts or restarts meets it too. A pause is only ever lengthened, never shortened, by a later 429. While
Redis is away, generations go on unpaused (the provider's own 429s still bound them): limits must not turn
a Redis outage into a generation outage.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from orchestrator import metrics
from orchestrator.outages import Outage

log = logging.getLogger(__name__)
_outage = Outage("provider limits: Redis (generating unpaused meanwhile)", log)

DEFAULT_PAUSE_S = 1.0  # a 429 without Retry-After
CLEAR_FOR_S = 0.1  # a model found unpaused is not asked about again this soon (one round trip per 100 ms)
MAX_PAUSE_S = 60.0

# Set the pause, or lengthen it: never shorten a pause another generator set for longer.
_PAUSE = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 1
"""


def _key(model: str) -> str:
    return f"provider-pause:{model}"


class ProviderPauses:
    """One per event loop (a generator process)."""

    def __init__(self) -> None:
        self._redis: aioredis.Redis | None = None
        self._clear_until: dict[str, float] = {}

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
        return self._redis

    async def wait(self, model: str) -> float:
        """Wait while ``model`` is paused; returns how long that was."""
        if time.monotonic() < self._clear_until.get(model, 0.0):
            return 0.0
        waited = 0.0
        while True:
            try:
                left_ms = await self._client().pttl(_key(model))
            except (RedisError, OSError) as exc:
                _outage.failed(exc)
                return waited
            _outage.ok()
            if left_ms <= 0:
                self._clear_until[model] = time.monotonic() + CLEAR_FOR_S
                break
            started = time.monotonic()
            await asyncio.sleep(left_ms / 1000)
            waited += time.monotonic() - started
        if waited:
            metrics.PROVIDER_PAUSED_SECONDS.labels(model=model).observe(waited)
        return waited

    async def pause(self, model: str, seconds: float | None) -> None:
        """The provider said 429: pause ``model`` for everyone, for ``seconds`` (its Retry-After)."""
        milliseconds = int(1000 * min(MAX_PAUSE_S, seconds if seconds is not None else DEFAULT_PAUSE_S))
        if milliseconds <= 0:
            return
        self._clear_until.pop(model, None)
        try:
            await self._client().eval(_PAUSE, 1, _key(model), milliseconds)
        except (RedisError, OSError) as exc:
            _outage.failed(exc)
            return
        _outage.ok()
        log.info("provider limits: %s paused for %.1f s (429)", model, milliseconds / 1000)


_pauses: dict[int, ProviderPauses] = {}


def pauses() -> ProviderPauses:
    """This event loop's (a Redis client belongs to the loop it was made on)."""
    loop = id(asyncio.get_running_loop())
    if loop not in _pauses:
        _pauses[loop] = ProviderPauses()
    return _pauses[loop]
