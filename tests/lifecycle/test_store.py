"""The hot path's transactions (``lifecycle.store.transaction``): two round trips each, and still one
transaction, whatever else runs in it and however it ends."""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path

import pytest
from django.db import IntegrityError, connection, transaction
from psycopg.pq import Trace, TransactionStatus

from lifecycle import services, store
from lifecycle.models import Lifecycle, OutboxMessage, TimelineEvent
from lifecycle.states import Status
from tests.conftest import make_project
from tests.lifecycle.factories import lifecycle_with_lost_request

pytestmark = pytest.mark.django_db(transaction=True)

# Each test's lifecycle never reaches Kafka (``lifecycle_with_lost_request``): when the whole suite runs, the
# stack's generator would otherwise claim it while the test does.


@contextlib.contextmanager
def queries_sent():
    """The query strings the client sends to PostgreSQL inside the block, as libpq traces them."""
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    sent: list[str] = []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "trace"
        with path.open("w") as trace:
            pgconn.trace(trace.fileno())
            pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
            try:
                yield sent
            finally:
                pgconn.untrace()
        messages = re.split(r"\n(?=[FB]\t)", path.read_text())  # a message's text may span lines
        sent += [m.split("\tQuery\t", 1)[1].strip(' "\n') for m in messages if m.startswith("F") and "\tQuery\t" in m]


def result(lifecycle: Lifecycle, lease: int) -> dict:
    return {
        "lifecycle_id": lifecycle.id,
        "output": "ok",
        "usage": {"input_tokens": 3, "output_tokens": 1},
        "model_used": "echo/test",
        "attempt": None,
        "lease": lease,
    }


def test_a_claim_and_a_result_are_two_round_trips_each_begin_with_the_read_and_commit_with_the_writes():
    project, _ = make_project()
    lifecycle = lifecycle_with_lost_request(project)
    with queries_sent() as claim:
        claimed = services.generation_claim_many(lifecycle_ids=[lifecycle.id])
    with queries_sent() as succeed:
        services.generation_succeed_many(results=[result(lifecycle, claimed[str(lifecycle.id)].attempts)])

    for sent in (claim, succeed):
        assert len(sent) == 2, sent
        assert sent[0].startswith("BEGIN;") and "FOR UPDATE" in sent[0]
        assert sent[1].endswith("COMMIT")
    lifecycle.refresh_from_db()
    assert lifecycle.status == Status.COMPLETED
    assert list(lifecycle.events.values_list("event", flat=True)) == [
        "lifecycle.created",
        "lifecycle.generating",
        "lifecycle.completed",
    ]
    # And the connection is as Django left it: autocommit, outside any transaction.
    assert connection.get_autocommit() and connection.connection.autocommit
    assert connection.connection.info.transaction_status == TransactionStatus.IDLE


def test_what_the_orm_writes_inside_is_in_the_same_transaction_and_an_error_rolls_all_of_it_back():
    project, _ = make_project()
    lifecycle = lifecycle_with_lost_request(project)
    committed = []
    with pytest.raises(RuntimeError), store.transaction():
        (locked,) = store.lock_many([lifecycle.id])
        locked.status = Status.GENERATING
        store.update(locked, fields=["status"])
        OutboxMessage.objects.create(topic="t", key="k", event_type="orm.write", payload={}, headers={})
        transaction.on_commit(lambda: committed.append(True))
        raise RuntimeError("the step fails after its read and its ORM write")

    lifecycle.refresh_from_db()
    assert lifecycle.status == Status.PENDING
    assert not OutboxMessage.objects.filter(event_type="orm.write").exists()
    assert committed == []
    assert connection.connection.info.transaction_status == TransactionStatus.IDLE
    with store.transaction():  # and the next one works
        (locked,) = store.lock_many([lifecycle.id])
        OutboxMessage.objects.create(topic="t", key="k", event_type="orm.write", payload={}, headers={})
        transaction.on_commit(lambda: committed.append(True))
    assert OutboxMessage.objects.filter(event_type="orm.write").count() == 1
    assert committed == [True]


def test_a_write_that_fails_writes_nothing_and_the_commit_after_it_never_runs():
    project, _ = make_project()
    lifecycle = lifecycle_with_lost_request(project)
    seq = TimelineEvent.objects.get(lifecycle=lifecycle).seq
    with pytest.raises(IntegrityError), store.transaction():
        (locked,) = store.lock_many([lifecycle.id])
        locked.status = Status.GENERATING
        # The same seq again: the batch's first statement fails, and the update and COMMIT after it with it.
        store.update(locked, fields=["status"], events=[TimelineEvent(lifecycle=locked, seq=seq, event="again")])
    lifecycle.refresh_from_db()
    assert lifecycle.status == Status.PENDING
    assert connection.connection.info.transaction_status == TransactionStatus.IDLE


def test_inside_a_callers_transaction_it_commits_nothing_itself():
    project, _ = make_project()
    lifecycle = lifecycle_with_lost_request(project)
    with queries_sent() as sent, pytest.raises(RuntimeError), transaction.atomic():
        services.generation_claim_many(lifecycle_ids=[lifecycle.id])
        raise RuntimeError("the caller's transaction rolls back")
    assert not any("COMMIT" in query for query in sent)
    lifecycle.refresh_from_db()
    assert lifecycle.status == Status.PENDING


def test_a_block_with_nothing_to_write_still_ends_its_transaction():
    with store.transaction():
        assert store.lock_many([]) == []
    assert connection.connection.info.transaction_status == TransactionStatus.IDLE
    assert connection.get_autocommit()
