"""Provider limits and project caps, shared by every generator process (shared/ARCHITECTURE.md, Flow control).

- **Configured limits**: requests and tokens per minute per provider/model (``PROVIDER_LIMITS``), checked
  before a call is made. Each is a GCRA (the generic cell rate algorithm, a token bucket kept as one
  timestamp): a model limited to 600 requests/min admits one every 100 ms (a little more: less
  ``PROVIDER_LIMITS_HEADROOM``, 2% by default), a call a spacing early when one came late (so the rate is
  kept, not lost to each caller's delay), never more than 600 in any minute: a burst queues and drains at
  the limit instead of meeting the provider's 429s. Tokens are
  charged before the call by an estimate (``tokens`` in the generation request: the prompt's length / 4 plus
  its ``max_tokens``), then settled against the usage the provider reports.
- **Pauses**: a provider's ``429`` pauses that model for everyone until its ``Retry-After`` has passed
  (``DEFAULT_PAUSE_S`` without one; a pause is only ever lengthened by a later 429).
- **Project caps**: a project's generations in flight across every generator
  (``Project.max_generations_in_flight``), as a set of leases in Redis that the generator renews with the
  lifecycles' own and releases when each ends; a generator that dies leaves leases that run out.

All of it lives in Redis (``limit:*`` keys that expire on their own), decided in one script per admission.
The generator asks before it claims a generation (:meth:`Gate.admit`): what is refused stays queued, in its
turn, and the model or project is held locally until the time the script named. While Redis is away
generations go on unlimited (the provider's own 429s still bound them): limits must not turn a Redis outage
into a generation outage.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from orchestrator import metrics
from orchestrator.outages import Outage

log = logging.getLogger(__name__)
_outage = Outage("provider limits: Redis (generating unlimited meanwhile)", log)

DEFAULT_PAUSE_S = 1.0  # a 429 without Retry-After
CLEAR_FOR_S = 0.1  # an unlimited model found unpaused is not asked about again this soon
MAX_PAUSE_S = 60.0
CAPPED_RETRY_S = 0.5  # a project at its cap is asked about again this soon (or when one of its own ends)

ADMITTED, PAUSED, LIMITED, CAPPED = "admitted", "paused", "limited", "capped"
_OUTCOMES = (ADMITTED, PAUSED, LIMITED, CAPPED)

# Times in microseconds (Redis's clock, the same for every generator), written with %.0f: Lua's own number
# formatting keeps 14 digits, too few for them.
# KEYS: pause, requests' cell, tokens' cell, the project's leases.
# ARGV: µs between requests (0: no limit), µs per token (0: no limit), tokens, cap (0: none), lease member,
# lease µs. Returns {outcome, µs to wait}: 0 admitted (and charged), 1 paused, 2 limited, 3 capped.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local paused = redis.call('PTTL', KEYS[1])
if paused > 0 then return {1, paused * 1000} end
local per_request, per_token = tonumber(ARGV[1]), tonumber(ARGV[2]) * tonumber(ARGV[3])
local requests_at, tokens_at = now, now
if per_request > 0 then requests_at = math.max(tonumber(redis.call('GET', KEYS[2]) or 0), now) end
if per_token > 0 then tokens_at = math.max(tonumber(redis.call('GET', KEYS[3]) or 0), now) end
-- A call may go one spacing early: a caller that came a little late catches up instead of losing the time.
local wait = math.max(requests_at - per_request, tokens_at) - now
if wait > 0 then return {2, wait} end
local cap = tonumber(ARGV[4])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  if not redis.call('ZSCORE', KEYS[4], ARGV[5]) and redis.call('ZCARD', KEYS[4]) >= cap then return {3, 0} end
  redis.call('ZADD', KEYS[4], string.format('%.0f', now + tonumber(ARGV[6])), ARGV[5])
  redis.call('PEXPIRE', KEYS[4], math.ceil(tonumber(ARGV[6]) / 1000))
end
local function charge(key, at, step)
  redis.call('SET', key, string.format('%.0f', at + step), 'PX', math.ceil(step / 1000) + 1000)
end
if per_request > 0 then charge(KEYS[2], requests_at, per_request) end
if per_token > 0 then charge(KEYS[3], tokens_at, per_token) end
return {0, 0}
"""

# The tokens a call used, against the estimate it was admitted with: the cell moves on by the difference
# (back, for a call that used fewer, never behind now). KEYS: tokens' cell; ARGV: µs to move (signed).
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local at = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now) + tonumber(ARGV[1])
if at > now then
  redis.call('SET', KEYS[1], string.format('%.0f', at), 'PX', math.ceil((at - now) / 1000) + 1000)
end
return 1
"""

# Set the pause, or lengthen it: never shorten a pause another generator set for longer.
_PAUSE = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 1
"""


@dataclass(frozen=True)
class Limit:
    """A provider/model's configured limits (``None``: not limited that way)."""

    rpm: int | None = None
    tpm: int | None = None


def parse_limits(spec: list[str]) -> dict[str, Limit]:
    """``PROVIDER_LIMITS`` entries, ``"openai/gpt-4o=rpm:500,tpm:30000"``, as a mapping. A ``provider/*``
    entry limits each of that provider's models not named on their own (each model by itself)."""
    limits = {}
    for entry in spec:
        model, _, terms = entry.partition("=")
        values: dict[str, int] = {}
        for term in filter(None, (t.strip() for t in terms.split(","))):
            name, _, number = term.partition(":")
            if name not in ("rpm", "tpm") or not number.isdigit() or int(number) <= 0:
                raise ValueError(f"PROVIDER_LIMITS: {entry!r}: each limit is rpm:<n> or tpm:<n>, n > 0")
            values[name] = int(number)
        if "/" not in model.strip() or not values:
            raise ValueError(f"PROVIDER_LIMITS: {entry!r} is not provider/model=rpm:<n>,tpm:<n>")
        limits[model.strip()] = Limit(**values)
    return limits


@functools.cache
def _configured() -> dict[str, Limit]:
    return parse_limits(settings.PROVIDER_LIMITS)


def limit_for(model: str) -> Limit | None:
    limits = _configured()
    return limits.get(model) or limits.get(model.split("/", 1)[0] + "/*")


def estimate_tokens(messages: list[dict[str, Any]], params: dict[str, Any]) -> int:
    """What a call will use, to charge a tokens-per-minute limit before it is made: about four characters a
    token for the prompt, and the answer's own cap (or ``GENERATION_OUTPUT_TOKENS_ESTIMATE``)."""
    characters = sum(len(str(message.get("content") or "")) for message in messages)
    answer = params.get("max_tokens") or params.get("max_completion_tokens")
    if not isinstance(answer, int) or answer <= 0:
        answer = settings.GENERATION_OUTPUT_TOKENS_ESTIMATE
    return math.ceil(characters / 4) + answer


def _spacing_us(per_minute: int) -> float:
    """Microseconds between units at ``per_minute``, less ``PROVIDER_LIMITS_HEADROOM``: calls spaced exactly
    at the limit reach the provider a few milliseconds early or late, and one early is one too many in its
    minute."""
    return 60_000_000 / (per_minute * (1 - settings.PROVIDER_LIMITS_HEADROOM))


def _key(kind: str, name: str) -> str:
    return f"limit:{kind}:{name}"


def _pause_key(model: str) -> str:
    return f"provider-pause:{model}"


@dataclass(frozen=True)
class Admission:
    outcome: str  # ADMITTED, or why not: PAUSED, LIMITED, CAPPED
    wait_s: float  # how long until it may be asked again


class Gate:
    """One per event loop (a generator process): its Redis client, and the models and projects it holds
    back until the time Redis named."""

    def __init__(self) -> None:
        self._redis: aioredis.Redis | None = None
        self._clear_until: dict[str, float] = {}
        self.held_models: dict[str, float] = {}  # model → monotonic time it may be asked about again
        self.held_projects: dict[str, float] = {}

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
        return self._redis

    def holds(self) -> tuple[set[str], set[str]]:
        """The projects and models held back now; what was held until a time now past is let go."""
        now = time.monotonic()
        for held in (self.held_projects, self.held_models):
            for name in [name for name, until in held.items() if until <= now]:
                del held[name]
        return set(self.held_projects), set(self.held_models)

    def next_release(self) -> float | None:
        """Seconds until the first hold ends, if any."""
        until = min([*self.held_projects.values(), *self.held_models.values()], default=None)
        return None if until is None else max(0.0, until - time.monotonic())

    def release_project(self, project: str) -> None:
        """One of the project's generations ended here: it may have room again."""
        self.held_projects.pop(project, None)

    async def admit(self, *, model: str, tokens: int, project: str, cap: int | None, member: str) -> Admission:
        """May a generation of ``model`` for ``project`` start now? Admitted, it is charged (a request, its
        estimated ``tokens``, a lease among the project's ``cap``); refused, the model or project is held."""
        limit = limit_for(model) if model else None
        if limit is None and not cap and time.monotonic() < self._clear_until.get(model, 0.0):
            return Admission(ADMITTED, 0.0)
        keys = [_pause_key(model), _key("requests", model), _key("tokens", model), _key("project", project)]
        args = [
            _spacing_us(limit.rpm) if limit and limit.rpm else 0,
            _spacing_us(limit.tpm) if limit and limit.tpm else 0,
            tokens,
            cap or 0,
            member,
            settings.GENERATION_LEASE_S * 1_000_000,
        ]
        try:
            code, wait_us = await self._client().eval(_ADMIT, len(keys), *keys, *args)
        except (RedisError, OSError) as exc:
            _outage.failed(exc)
            return Admission(ADMITTED, 0.0)
        _outage.ok()
        outcome, wait_s = _OUTCOMES[int(code)], int(wait_us) / 1_000_000
        if outcome == ADMITTED:
            if limit is None and not cap:
                self._clear_until[model] = time.monotonic() + CLEAR_FOR_S
            return Admission(outcome, 0.0)
        self._clear_until.pop(model, None)
        if outcome == CAPPED:
            wait_s = CAPPED_RETRY_S
            self.held_projects[project] = time.monotonic() + wait_s
        else:
            self.held_models[model] = time.monotonic() + wait_s
        metrics.GENERATION_HOLDS.labels(reason=outcome).inc()
        return Admission(outcome, wait_s)

    async def wait(self, model: str, tokens: int) -> float:
        """Wait until a call to ``model`` is admitted (a retry or a fallback, made by a generation already
        running); returns how long that was."""
        waited = 0.0
        while True:
            admission = await self.admit(model=model, tokens=tokens, project="", cap=None, member="")
            if admission.outcome == ADMITTED:
                break
            await asyncio.sleep(admission.wait_s)
            waited += admission.wait_s
        if waited:
            metrics.PROVIDER_PAUSED_SECONDS.labels(model=model).observe(waited)
        return waited

    async def settle(self, model: str, *, estimated: int, used: int) -> None:
        """The call used ``used`` tokens where ``estimated`` were charged: correct the model's tokens cell."""
        limit = limit_for(model)
        if limit is None or not limit.tpm or used == estimated:
            return
        try:
            await self._client().eval(_SETTLE, 1, _key("tokens", model), (used - estimated) * _spacing_us(limit.tpm))
        except (RedisError, OSError) as exc:
            _outage.failed(exc)

    async def pause(self, model: str, seconds: float | None) -> None:
        """The provider said 429: pause ``model`` for everyone, for ``seconds`` (its Retry-After)."""
        milliseconds = int(1000 * min(MAX_PAUSE_S, seconds if seconds is not None else DEFAULT_PAUSE_S))
        if milliseconds <= 0:
            return
        self._clear_until.pop(model, None)
        self.held_models[model] = time.monotonic() + milliseconds / 1000
        try:
            await self._client().eval(_PAUSE, 1, _pause_key(model), milliseconds)
        except (RedisError, OSError) as exc:
            _outage.failed(exc)
            return
        _outage.ok()
        log.info("provider limits: %s paused for %.1f s (429)", model, milliseconds / 1000)

    async def renew(self, leases: dict[str, list[str]]) -> None:
        """Keep the project leases of the generations running here (project → lifecycle ids)."""
        if not leases:
            return
        try:
            pipe = self._client().pipeline(transaction=False)
            for project, members in leases.items():
                pipe.eval(_RENEW, 1, _key("project", project), settings.GENERATION_LEASE_S * 1_000_000, *members)
            await pipe.execute()
        except (RedisError, OSError) as exc:
            _outage.failed(exc)

    async def release(self, project: str, member: str) -> None:
        try:
            await self._client().zrem(_key("project", project), member)
        except (RedisError, OSError) as exc:
            _outage.failed(exc)


# Leases renewed by the Redis clock, the only one the scores are on. KEYS: the project's leases;
# ARGV: lease µs, then the members (only those still held: XX).
_RENEW = """
local t = redis.call('TIME')
local until = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1]))
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) / 1000))
return 1
"""

_gates: dict[int, Gate] = {}


def gate() -> Gate:
    """This event loop's (a Redis client belongs to the loop it was made on)."""
    loop = id(asyncio.get_running_loop())
    if loop not in _gates:
        _gates[loop] = Gate()
    return _gates[loop]
