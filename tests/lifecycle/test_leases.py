"""A generation longer than its lease runs once: the lease is renewed while it runs, and outcomes are fenced
by the claim that holds it."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.utils import timezone

from lifecycle import outbox, services
from lifecycle.models import Lifecycle, OutboxMessage, TimelineEvent
from lifecycle.states import ErrorCode
from tests.lifecycle.factories import lifecycle_with_lost_request
from tests.lifecycle.helpers import create, scripted, timeline, wait_status


@pytest.mark.stack
@pytest.mark.django_db(transaction=True)
def test_a_generation_longer_than_its_lease_is_called_once_at_the_provider(api, fake_openai):
    scenario = uuid.uuid4().hex
    # Streamed over three leases' time (the suite's lease is 6 s), never silent long enough to time out.
    slow_s = 3 * settings.GENERATION_LEASE_S
    reply = " ".join(f"word{i}" for i in range(slow_s))
    prompt = scripted(scenario, {"slow-model": [f"trickle:{slow_s}"]}, reply=reply)

    lifecycle = create(api, {"model": "openai/slow-model", "prompt": prompt, "params": {"stream": True}})
    final = wait_status(api, lifecycle["id"], timeout=slow_s + 30)

    assert final["status"] == "completed", final
    assert final["output"] == reply
    assert httpx.get(f"{fake_openai}/calls").json()[f"{scenario}/slow-model"] == 1
    names = [e["event"] for e in timeline(api, lifecycle["id"])]
    assert "generation.reclaimed" not in names
    assert names.count("lifecycle.generating") == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_lost_its_lease_can_neither_fail_nor_complete_the_generation(project_key):
    project, _ = project_key
    lifecycle = lifecycle_with_lost_request(project)
    stale = services.generation_claim(lifecycle_id=lifecycle.id)
    # The stale worker was cut off past its lease, and another worker reclaimed the generation.
    Lifecycle.objects.filter(id=lifecycle.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    live = services.generation_claim(lifecycle_id=lifecycle.id)
    assert live is not None and live.attempts != stale.attempts

    assert services.generation_leases_renew(held={str(lifecycle.id): stale.attempts}) == {str(lifecycle.id)}
    failed = services.generation_fail(
        lifecycle_id=lifecycle.id, lease=stale.attempts, code=ErrorCode.GENERATION_FAILED, message="stale"
    )
    late = services.generation_succeed(
        lifecycle_id=lifecycle.id, output="stale", usage=None, model_used="echo/test", lease=stale.attempts
    )
    assert failed is None and late is None
    assert services.generation_leases_renew(held={str(lifecycle.id): live.attempts}) == set()
    done = services.generation_succeed(
        lifecycle_id=lifecycle.id, output="live", usage=None, model_used="echo/test", lease=live.attempts
    )

    assert done is not None and done.status == "completed"
    assert Lifecycle.objects.get(id=lifecycle.id).result == "live"


@pytest.mark.django_db(transaction=True)
def test_a_batch_is_claimed_in_one_transaction_each_lifecycle_as_if_alone(project_key):
    project, _ = project_key
    pending, held, expired, done = (lifecycle_with_lost_request(project) for _ in range(4))
    services.generation_claim(lifecycle_id=held.id)
    services.generation_claim(lifecycle_id=expired.id)
    Lifecycle.objects.filter(id=expired.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    services.lifecycle_cancel(lifecycle=done)
    missing = uuid.uuid4()

    ids = [pending.id, held.id, expired.id, done.id, missing, pending.id]
    claimed = services.generation_claim_many(lifecycle_ids=ids)

    # The pending one moves on, the one whose worker died is reclaimed (a new fencing token); the one under a
    # live lease, the ended one, the unknown id and the repeat are nobody's to claim.
    assert set(claimed) == {str(pending.id), str(expired.id)}
    assert claimed[str(pending.id)].status == "generating"
    assert claimed[str(expired.id)].attempts == Lifecycle.objects.get(id=held.id).attempts + 1
    for lifecycle_id, last in ((pending.id, "lifecycle.generating"), (expired.id, "generation.reclaimed")):
        events = list(TimelineEvent.objects.filter(lifecycle_id=lifecycle_id).order_by("seq"))
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert events[-1].event == last
        row = Lifecycle.objects.get(id=lifecycle_id)
        assert row.last_seq == len(events)
        published = OutboxMessage.objects.filter(key=str(lifecycle_id), topic=outbox.TOPIC_EVENTS)
        assert sorted(m.payload["seq"] for m in published) == [e.seq for e in events]


@pytest.mark.django_db(transaction=True)
def test_results_stored_together_each_as_if_alone(project_key):
    project, _ = project_key
    first, second, stale = (lifecycle_with_lost_request(project) for _ in range(3))
    claims = services.generation_claim_many(lifecycle_ids=[first.id, second.id, stale.id])

    def result(lifecycle_id, lease, output):
        return {"lifecycle_id": lifecycle_id, "output": output, "usage": None, "model_used": "echo/test",
                "attempt": services.Step("generation.attempt", {"outcome": "ok"}), "lease": lease}  # fmt: skip

    outcomes = services.generation_succeed_many(
        results=[
            result(first.id, claims[str(first.id)].attempts, "one"),
            result(stale.id, claims[str(stale.id)].attempts + 1, "from a worker that lost its lease"),
            result(uuid.uuid4(), 0, "for nobody"),
            result(second.id, claims[str(second.id)].attempts, "two"),
        ]
    )

    assert [o.status if o else None for o in outcomes] == ["completed", None, None, "completed"]
    assert Lifecycle.objects.get(id=first.id).result == "one"
    assert Lifecycle.objects.get(id=second.id).result == "two"
    assert Lifecycle.objects.get(id=stale.id).status == "generating"  # fenced: only its attempt is recorded
    stale_events = [e.event for e in TimelineEvent.objects.filter(lifecycle_id=stale.id).order_by("seq")]
    assert stale_events[-1] == "generation.attempt"
