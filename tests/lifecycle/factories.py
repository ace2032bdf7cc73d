"""Small factories for rows the tests need directly, bypassing the API."""

from __future__ import annotations

from django.db import transaction

from lifecycle import outbox
from lifecycle.models import Lifecycle, OutboxMessage, Project
from lifecycle.services import LifecycleRequest, lifecycle_create


def lifecycle_request(**overrides) -> LifecycleRequest:
    fields = {
        "model": "echo/test",
        "messages": [{"role": "user", "content": "hello"}],
        "params": {},
        "response_format": None,
        "fallbacks": [],
        "delivery": {"mode": "direct"},
        "metadata": {},
        "subscriber": {},
    }
    return LifecycleRequest(**{**fields, **overrides})


def lifecycle_with_lost_request(project: Project, **overrides) -> Lifecycle:
    """A lifecycle committed as usual, except that its generation request never reaches Kafka, as if the
    broker had lost it."""
    with transaction.atomic():
        lifecycle, _ = lifecycle_create(project=project, request=lifecycle_request(**overrides))
        OutboxMessage.objects.filter(key=str(lifecycle.id), topic=outbox.TOPIC_REQUESTS).delete()
    return lifecycle
