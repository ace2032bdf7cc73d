"""Rate limits: per project, and per user for a caller with its own JWT, each a one-second window counted
in Redis, shared by every process that serves the API."""

from __future__ import annotations

import functools
import hashlib
import logging
import time

import redis
from django.conf import settings
from rest_framework.throttling import BaseThrottle

from lifecycle import identity
from orchestrator.outages import Outage

log = logging.getLogger(__name__)
_outage = Outage("rate limit: Redis (allowing requests meanwhile)", log)


@functools.cache
def redis_client() -> redis.Redis:
    """The API processes' synchronous Redis client (rate limits, the key cache's version)."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


def project_retry_after(project, subscriber=None) -> float | None:
    """``None`` if the project (and the JWT caller ``subscriber``, if given) may make one more request this
    second, else how long until it may."""
    window = int(time.time())
    limits = [(f"ratelimit:{project.id}:{window}", project.rate_limit_per_s or settings.RATE_LIMIT_PER_S)]
    if subscriber is not None:
        per_user = subscriber.issuer.rate_limit_per_user_s or settings.JWT_RATE_LIMIT_PER_USER_S
        digest = hashlib.sha256(subscriber.user_id.encode()).hexdigest()[:32]
        limits.append((f"ratelimit:{project.id}:user:{digest}:{window}", per_user))
    try:
        pipe = redis_client().pipeline()
        for counter, _ in limits:
            pipe.incr(counter)
            pipe.expire(counter, 2)
        counts = pipe.execute()[::2]
    except redis.RedisError as exc:
        # Failing open: a Redis outage must not take the API down with it.
        _outage.failed(exc)
        return None
    _outage.ok()
    if all(count <= limit for count, (_, limit) in zip(counts, limits, strict=True)):
        return None
    return max(1.0, round(1.0 - (time.time() - window)))


class ProjectRateThrottle(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        key = getattr(request, "auth", None)
        if key is None:
            return True  # unauthenticated requests are refused before they cost anything
        subscriber = key if isinstance(key, identity.Subscriber) else None
        self._retry_after = project_retry_after(key.project, subscriber)
        return self._retry_after is None

    def wait(self) -> float:
        return getattr(self, "_retry_after", None) or 1.0
