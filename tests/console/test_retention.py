"""The retention sweep prunes old payloads and bodies and leaves every lifecycle's summary whole."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from lifecycle.models import Lifecycle, TimelineEvent
from lifecycle.services import timeline_prune
from tests.conftest import make_project
from tests.console.factories import rich_lifecycle
from webhooks.models import Delivery, DeliveryAttempt
from webhooks.services import deliveries_prune

pytestmark = pytest.mark.django_db


def age(lifecycle: Lifecycle, days: int) -> None:
    then = timezone.now() - timedelta(days=days)
    TimelineEvent.objects.filter(lifecycle=lifecycle).update(at=then)
    Delivery.objects.filter(lifecycle=lifecycle).update(created_at=then)


def test_old_payloads_are_cut_to_their_summary_and_recent_ones_kept():
    project, _ = make_project()
    old, recent = rich_lifecycle(project, fail=True), rich_lifecycle(project)
    Delivery.objects.filter(lifecycle=old).update(payload={"data": {"callback": {"token": "secret"}}})
    age(old, 40)
    summary_before = Lifecycle.objects.filter(id=old.id).values("status", "result", "error", "output", "usage").get()
    recent_payloads = list(TimelineEvent.objects.filter(lifecycle=recent).values_list("payload", flat=True))

    assert timeline_prune(older_than=timedelta(days=30)) == TimelineEvent.objects.filter(lifecycle=old).count()
    assert deliveries_prune(older_than=timedelta(days=30)) == 1

    events = list(TimelineEvent.objects.filter(lifecycle=old).order_by("seq"))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(e.payload["pruned"] for e in events)
    attempt = next(e for e in events if e.event == "generation.attempt")
    assert set(attempt.payload) <= {"model", "attempt", "outcome", "http_status", "latency_ms", "retryable", "pruned"}
    failed = next(e for e in events if e.event == "lifecycle.failed")
    assert failed.payload["error"] == {"code": "backend_rejected", "step": "callback"}
    assert Delivery.objects.get(lifecycle=old).payload == {}
    assert set(DeliveryAttempt.objects.filter(delivery__lifecycle=old).values_list("response_excerpt", flat=True)) == {
        ""
    }
    assert (
        Lifecycle.objects.filter(id=old.id).values("status", "result", "error", "output", "usage").get()
        == summary_before
    )
    assert list(TimelineEvent.objects.filter(lifecycle=recent).values_list("payload", flat=True)) == recent_payloads
    assert timeline_prune(older_than=timedelta(days=30)) == 0  # idempotent


def test_the_console_still_draws_a_pruned_timeline(admin_client):
    project, _ = make_project()
    old = rich_lifecycle(project)
    age(old, 40)
    timeline_prune(older_than=timedelta(days=30))

    page = admin_client.get(f"/admin/lifecycle/lifecycle/{old.id}/change/")

    assert page.status_code == 200
    assert b'data-event="lifecycle.completed"' in page.content
