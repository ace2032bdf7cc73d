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


class ProjectRateThrottle(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        key = getattr(request, "auth", None)
        if key is None:
            return True  # unauthenticated requests are refused before they cost anything
        project = key.project
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
            return True
        _outage.ok()
        self._retry_after = 1.0 - (time.time() - window)
        return count <= limit

    def wait(self) -> float:
        return max(1.0, round(getattr(self, "_retry_after", 1.0)))
