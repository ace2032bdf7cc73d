"""The callback endpoint: token scope and expiry, the body's schema, first callback wins."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from lifecycle.services import transition
from lifecycle.states import Status
from tests.conftest import make_project
from tests.lifecycle.factories import lifecycle_with_lost_request
from webhooks.callbacks import MAX_CALLBACK_BYTES, mint_token

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def waiting(stack):
    """A lifecycle awaiting its backend's callback, and a valid token for it."""
    project, _ = make_project()
    lifecycle = lifecycle_with_lost_request(project)
    lifecycle.lease_expires_at = None  # keep the reconciler away: this one is driven by hand
    lifecycle.save()
    for status in (Status.GENERATING, Status.DELIVERING, Status.AWAITING_CALLBACK):
        transition(
            lifecycle_id=lifecycle.id, to=status, fields={"lease_expires_at": timezone.now() + timedelta(hours=1)}
        )
    token = mint_token(lifecycle_id=str(lifecycle.id), expires_at=timezone.now() + timedelta(hours=1))
    return lifecycle, token


def call_back(stack, lifecycle_id, token: str | None, body=None, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        f"{stack.base_url}/v1/lifecycles/{lifecycle_id}/callback", json=body, headers=headers, timeout=10, **kwargs
    )


def test_data_completes_the_lifecycle_and_an_identical_repeat_is_a_200(stack, waiting):
    lifecycle, token = waiting

    first = call_back(stack, lifecycle.id, token, {"data": {"ok": True}})
    again = call_back(stack, lifecycle.id, token, {"data": {"ok": True}})

    assert first.status_code == 200, first.text
    assert first.json() == {"lifecycle_id": str(lifecycle.id), "status": "completed", "applied": True}
    assert again.status_code == 200
    assert again.json()["applied"] is False
    lifecycle.refresh_from_db()
    assert lifecycle.result == {"ok": True}


def test_a_different_second_callback_is_a_409_and_changes_nothing(stack, waiting):
    lifecycle, token = waiting
    call_back(stack, lifecycle.id, token, {"data": {"ok": True}})

    response = call_back(stack, lifecycle.id, token, {"error": {"code": "late", "message": "changed my mind"}})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    lifecycle.refresh_from_db()
    assert lifecycle.status == "completed"


@pytest.mark.parametrize(
    "token_for",
    ["missing", "garbage", "another lifecycle", "expired"],
)
def test_a_bad_token_is_refused_before_anything_happens(stack, waiting, token_for):
    lifecycle, _ = waiting
    other = lifecycle_with_lost_request(make_project("other")[0])
    token = {
        "missing": None,
        "garbage": "not-a-token",
        "another lifecycle": mint_token(lifecycle_id=str(other.id), expires_at=timezone.now() + timedelta(hours=1)),
        "expired": mint_token(lifecycle_id=str(lifecycle.id), expires_at=timezone.now() - timedelta(seconds=1)),
    }[token_for]

    response = call_back(stack, lifecycle.id, token, {"data": {"ok": True}})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    lifecycle.refresh_from_db()
    assert lifecycle.status == "awaiting_callback"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"data": 1, "error": {"code": "x", "message": "y"}},
        {"error": {"code": "x"}},
        {"error": "just a string"},
        {"data": {}, "extra": True},
        [1, 2],
    ],
)
def test_a_body_outside_the_callback_schema_is_a_400(stack, waiting, body):
    lifecycle, token = waiting

    response = call_back(stack, lifecycle.id, token, body)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    lifecycle.refresh_from_db()
    assert lifecycle.status == "awaiting_callback"


def test_malformed_json_and_oversized_callbacks_are_refused(stack, waiting):
    lifecycle, token = waiting
    url = f"{stack.base_url}/v1/lifecycles/{lifecycle.id}/callback"
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    assert httpx.post(url, content=b'{"data": ', headers=auth).status_code == 400
    big = b'{"data": "' + b"x" * MAX_CALLBACK_BYTES + b'"}'
    response = httpx.post(url, content=big, headers=auth)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_a_callback_for_a_lifecycle_not_waiting_for_one_is_a_409(stack, waiting):
    lifecycle, token = waiting
    transition(lifecycle_id=lifecycle.id, to=Status.CANCELLED)

    response = call_back(stack, lifecycle.id, token, {"data": {"ok": True}})

    assert response.status_code == 409
