"""The management commands an operator runs."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from lifecycle import kafka
from lifecycle.models import ApiKey, Lifecycle
from lifecycle.outbox import TOPICS
from lifecycle.services import api_key_authenticate
from tests.conftest import make_project
from tests.console.factories import rich_lifecycle
from tests.lifecycle.factories import lifecycle_with_lost_request
from webhooks.models import Delivery, DeliveryStatus

pytestmark = pytest.mark.django_db


def run(*args) -> tuple[str, str | None]:
    out = io.StringIO()
    result = call_command(*args, stdout=out)
    return out.getvalue(), result


def test_apikey_create_rotate_revoke_and_list():
    project, first_key = make_project()

    created = json.loads(run("apikey", "create", str(project.id), "--name", "ci")[0])
    assert api_key_authenticate(raw_key=created["api_key"]).name == "ci"

    rotated = json.loads(run("apikey", "rotate", created["prefix"])[0])
    assert api_key_authenticate(raw_key=created["api_key"]) is None
    assert api_key_authenticate(raw_key=rotated["api_key"]).name == "ci"

    run("apikey", "revoke", rotated["prefix"])
    assert api_key_authenticate(raw_key=rotated["api_key"]) is None
    assert api_key_authenticate(raw_key=first_key) is not None

    listed = [json.loads(line) for line in run("apikey", "list", str(project.id))[0].splitlines()]
    assert len(listed) == 3 == ApiKey.objects.filter(project=project).count()
    assert sum(1 for k in listed if k["revoked_at"] is None) == 1
    assert all("api_key" not in k and "key_hash" not in k for k in listed)


def test_replaylifecycles_replays_a_filtered_time_range():
    project, _ = make_project()
    old = lifecycle_with_lost_request(project, model="echo/old")
    Lifecycle.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(days=3))
    recent_failed = rich_lifecycle(project, fail=True)
    lifecycle_with_lost_request(project, model="echo/other")
    since = (timezone.now() - timedelta(days=1)).isoformat()

    _, dry = run("replaylifecycles", str(project.id), "--since", since, "--status", "failed", "--dry-run")
    assert dry == "would replay 1 lifecycles"
    assert not Lifecycle.objects.filter(replay_of__isnull=False).exists()

    _, summary = run("replaylifecycles", str(project.id), "--since", since, "--status", "failed")
    assert summary == "replayed 1 lifecycles"
    assert Lifecycle.objects.get(replay_of=recent_failed).model == recent_failed.model

    _, by_model = run("replaylifecycles", str(project.id), "--model", "echo/old")
    assert by_model == "replayed 1 lifecycles"
    assert Lifecycle.objects.filter(replay_of=old).count() == 1


def test_resenddeliveries_requeues_exhausted_ones():
    project, _ = make_project()
    lifecycle = rich_lifecycle(project)
    Delivery.objects.filter(lifecycle=lifecycle).update(status=DeliveryStatus.EXHAUSTED)

    assert run("resenddeliveries", "--dry-run")[1] == "would resend 1 deliveries"
    assert run("resenddeliveries")[1] == "resent 1 deliveries"

    assert Delivery.objects.get(lifecycle=lifecycle).status == DeliveryStatus.PENDING


def test_createtopics_creates_every_topic():
    out, _ = run("createtopics")

    existing = kafka.admin_client().list_topics(timeout=10).topics
    assert set(TOPICS) <= set(existing)
    assert all(topic in out for topic in TOPICS)
