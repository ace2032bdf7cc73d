"""Celery tasks are transport: each calls one service."""

from __future__ import annotations

import logging

from celery import shared_task

from lifecycle import services

log = logging.getLogger(__name__)


@shared_task(name="lifecycle.tasks.reconcile_stuck")
def reconcile_stuck() -> int:
    redriven = services.lifecycles_redrive_stuck()
    if redriven:
        log.warning("reconciler: re-drove %d stuck lifecycles", redriven)
    return redriven
