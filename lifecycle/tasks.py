"""Celery tasks are transport: each calls one service."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings

from lifecycle import services
from orchestrator.db import single_flight

log = logging.getLogger(__name__)


@shared_task(name="lifecycle.tasks.reconcile_stuck")
def reconcile_stuck() -> int:
    # One reconciler at a time: runs that pile up behind a slow one (beat keeps scheduling) return at once
    # instead of all re-driving side by side and starving the workers of webhook attempts.
    with single_flight("reconcile_stuck") as alone:
        if not alone:
            return 0
        redriven = services.lifecycles_redrive_stuck()
    if redriven:
        log.warning("reconciler: re-drove %d stuck lifecycles", redriven)
    return redriven


@shared_task(name="lifecycle.tasks.expire_callbacks")
def expire_callbacks() -> int:
    return services.lifecycles_expire_callbacks()


@shared_task(name="lifecycle.tasks.prune_timelines")
def prune_timelines() -> int:
    return services.timeline_prune(older_than=timedelta(days=settings.RETENTION_DAYS))
