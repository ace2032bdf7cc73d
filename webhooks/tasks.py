"""Celery tasks are transport: each calls one service. (Attempts are the delivery process's: webhooks.worker.)"""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from webhooks import services


@shared_task(name="webhooks.tasks.end_stranded_lifecycles")
def end_stranded_lifecycles() -> int:
    return services.lifecycles_end_stranded()


@shared_task(name="webhooks.tasks.prune_deliveries")
def prune_deliveries() -> int:
    return services.deliveries_prune(older_than=timedelta(days=settings.RETENTION_DAYS))
