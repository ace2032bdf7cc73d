"""Property-based tests of the state machine: no sequence of events reaches an illegal state."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle import outbox
from lifecycle.models import Lifecycle, OutboxMessage, TimelineEvent
from lifecycle.services import lifecycle_create, lifecycles_redrive_stuck, transition
from lifecycle.states import ALLOWED, EVENT_FOR_STATUS, TERMINAL, Status
from tests.conftest import make_project
from tests.lifecycle.factories import lifecycle_request, lifecycle_with_lost_request

pytestmark = pytest.mark.django_db

STATUSES = list(Status)


def test_every_non_terminal_status_can_end_in_failed_or_cancelled_and_terminal_ones_go_nowhere():
    for status in Status:
        if status in TERMINAL:
            assert ALLOWED[status] == frozenset()
        else:
            assert {Status.FAILED, Status.CANCELLED} <= ALLOWED[status]


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moves=st.lists(st.sampled_from(STATUSES), max_size=12))
def test_no_sequence_of_moves_reaches_an_illegal_state(moves):
    project, _ = make_project()
    lifecycle, _ = lifecycle_create(project=project, request=lifecycle_request())
    status, applied = Status.PENDING, 0

    for target in moves:
        result = transition(lifecycle_id=lifecycle.id, to=target)
        if target in ALLOWED[status]:
            assert result is not None and result.status == target
            status, applied = target, applied + 1
        else:
            assert result is None  # refused, and nothing written

    lifecycle.refresh_from_db()
    assert lifecycle.status == status
    events = list(TimelineEvent.objects.filter(lifecycle=lifecycle).order_by("seq"))
    # One event per accepted move (plus creation), numbered 1..n without gaps.
    assert [e.seq for e in events] == list(range(1, applied + 2))
    assert lifecycle.last_seq == applied + 1
    assert events[-1].event == EVENT_FOR_STATUS[status]
    # Every event was published through the outbox in the same transaction.
    published = OutboxMessage.objects.filter(key=str(lifecycle.id), topic=outbox.TOPIC_EVENTS)
    assert sorted(m.payload["seq"] for m in published) == [e.seq for e in events]
    if status in TERMINAL:
        assert lifecycle.finished_at is not None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(STATUSES))
def test_repeating_a_move_is_a_no_op(target):
    project, _ = make_project()
    lifecycle, _ = lifecycle_create(project=project, request=lifecycle_request())
    path = {
        Status.PENDING: [],
        Status.GENERATING: [Status.GENERATING],
        Status.DELIVERING: [Status.GENERATING, Status.DELIVERING],
        Status.AWAITING_CALLBACK: [Status.GENERATING, Status.DELIVERING, Status.AWAITING_CALLBACK],
        Status.COMPLETED: [Status.GENERATING, Status.COMPLETED],
        Status.FAILED: [Status.FAILED],
        Status.CANCELLED: [Status.CANCELLED],
    }[target]
    for step in path:
        assert transition(lifecycle_id=lifecycle.id, to=step) is not None
    seq_before = TimelineEvent.objects.filter(lifecycle=lifecycle).count()

    assert transition(lifecycle_id=lifecycle.id, to=target) is None
    assert TimelineEvent.objects.filter(lifecycle=lifecycle).count() == seq_before


def test_the_reconciler_backs_off_a_lifecycle_it_already_redrove(db):
    """A request that is only late (behind a consumer lag) must not be republished onto that backlog every
    period: each re-drive waits twice as long as the last."""
    project, _ = make_project()
    lifecycle = lifecycle_with_lost_request(project)
    Lifecycle.objects.filter(id=lifecycle.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    waits = []
    for _ in range(3):
        assert lifecycles_redrive_stuck() == 1
        assert lifecycles_redrive_stuck() == 0  # not again before its backoff
        lifecycle.refresh_from_db()
        waits.append(round((lifecycle.next_redrive_at - lifecycle.redriven_at).total_seconds()))
        Lifecycle.objects.filter(id=lifecycle.id).update(next_redrive_at=timezone.now() - timedelta(seconds=1))

    after = django_settings.RECONCILE_AFTER_S
    assert waits == [after, 2 * after, 4 * after]
    assert lifecycle.redrive_count == 3
