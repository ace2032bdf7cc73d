"""Per-project rate limit: a one-second window counted in Redis, shared by every web process."""

from __future__ import annotations

import functools
import logging
import time

import redis
from django.conf import settings
from rest_framework.throttling import BaseThrottle

from orchestrator.outages import Outage

log = logging.getLogger(__name__)
_outage = Outage("rate limit: Redis (allowing requests meanwhile)", log)


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


def project_retry_after(project) -> float | None:
    """``None`` if the project may make one more request this second, else how long until it may."""
    limit = project.rate_limit_per_s or settings.RATE_LIMIT_PER_S
    window = int(time.time())
    counter = f"ratelimit:{project.id}:{window}"
    try:
        pipe = _redis().pipeline()
        pipe.incr(counter)
        pipe.expire(counter, 2)
        count, _ = pipe.execute()
    except redis.RedisError as exc:
        # Failing open: a Redis outage must not take the API down with it.
        _outage.failed(exc)
        return None
    _outage.ok()
    return None if count <= limit else max(1.0, round(1.0 - (time.time() - window)))


class ProjectRateThrottle(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        key = getattr(request, "auth", None)
        if key is None:
            return True  # unauthenticated requests are refused before they cost anything
        self._retry_after = project_retry_after(key.project)
        return self._retry_after is None

    def wait(self) -> float:
        return getattr(self, "_retry_after", None) or 1.0
