"""Celery tasks are transport: each calls one service."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings

from lifecycle import services

log = logging.getLogger(__name__)


@shared_task(name="lifecycle.tasks.reconcile_stuck")
def reconcile_stuck() -> int:
    redriven = services.lifecycles_redrive_stuck()
    if redriven:
        log.warning("reconciler: re-drove %d stuck lifecycles", redriven)
    return redriven


@shared_task(name="lifecycle.tasks.prune_timelines")
def prune_timelines() -> int:
    return services.timeline_prune(older_than=timedelta(days=settings.RETENTION_DAYS))
