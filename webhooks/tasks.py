"""Celery tasks are transport: each calls one service."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from lifecycle import services as lifecycle_services
from webhooks import services


@shared_task(name="webhooks.tasks.attempt_delivery", acks_late=True, reject_on_worker_lost=True)
def attempt_delivery(delivery_id: str) -> str | None:
    return services.delivery_attempt(delivery_id=delivery_id)


@shared_task(name="webhooks.tasks.queue_due_deliveries")
def queue_due_deliveries() -> int:
    return services.deliveries_queue_due()


@shared_task(name="webhooks.tasks.end_stranded_lifecycles")
def end_stranded_lifecycles() -> int:
    return services.lifecycles_end_stranded()


@shared_task(name="webhooks.tasks.expire_callbacks")
def expire_callbacks() -> int:
    return lifecycle_services.lifecycles_expire_callbacks()


@shared_task(name="webhooks.tasks.prune_deliveries")
def prune_deliveries() -> int:
    return services.deliveries_prune(older_than=timedelta(days=settings.RETENTION_DAYS))
