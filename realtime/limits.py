"""Open sockets per realtime token, counted in Redis so the limit holds across web processes."""

from __future__ import annotations

import functools
import hashlib
import logging

import redis.asyncio as redis
from django.conf import settings
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

log = logging.getLogger(__name__)


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),  # a socket open waits on this
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        max_connections=settings.REDIS_MAX_CONNECTIONS,
    )


def count_key(token: str) -> str:
    """The Redis key counting ``token``'s open sockets."""
    return "ws:connections:" + hashlib.sha256(token.encode()).hexdigest()[:32]


# Count one more socket unless the token is at its limit, in one round trip. A web process killed with open
# sockets never releases them, so the count dies with the token (its TTL is the token's, and a minute).
_ACQUIRE = (
    "local n = redis.call('INCR', KEYS[1]) redis.call('EXPIRE', KEYS[1], ARGV[1]) "
    "if n > tonumber(ARGV[2]) then redis.call('DECR', KEYS[1]) return 0 end return 1"
)


async def acquire(token: str) -> bool:
    """Count one more socket for ``token``; False (and nothing counted) when it is at its limit."""
    ttl, limit = settings.REALTIME_TOKEN_TTL_S + 60, settings.REALTIME_MAX_CONNECTIONS_PER_TOKEN
    try:
        return bool(await _redis().eval(_ACQUIRE, 1, count_key(token), ttl, limit))
    except redis.RedisError as exc:
        log.warning("connection limit unavailable, allowing the socket: %s", exc)
    return True


# The last socket of a token takes its count with it, rather than leaving a zero until the key expires (a
# token per lifecycle left ~8,000 such keys in Redis at 8 lifecycles/s, the soak found).
_RELEASE = "local n = redis.call('DECR', KEYS[1]) if n <= 0 then redis.call('DEL', KEYS[1]) end return n"


async def release(token: str) -> None:
    try:
        await _redis().eval(_RELEASE, 1, count_key(token))
    except redis.RedisError as exc:
        log.warning("could not release a socket's count: %s", exc)
