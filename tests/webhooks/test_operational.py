"""Operational webhooks (Svix's names): ``message.attempt.exhausted`` and ``endpoint.disabled``, sent signed
to the endpoints a project lists them on, and ``POST /v1/webhook-endpoints/{id}/recover``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.lifecycle.helpers import create, wait_status
from tests.processes import poll_until
from tests.webhooks.helpers import endpoint, received
from webhooks.models import WebhookEndpoint

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def arrived(customer_backend: str, scenario: str, count: int = 1) -> list[dict]:
    return poll_until(
        lambda: received(customer_backend, scenario),
        lambda got: len(got) >= count,
        timeout=30,
        what=f"{count} operational webhook(s) received",
    )


def test_an_exhausted_delivery_is_told_to_the_endpoints_that_listen_for_it(api, customer_backend):
    listener, listening = endpoint(api, customer_backend, "silent", event_types=["message.attempt.exhausted"])
    failing, _ = endpoint(api, customer_backend, "500")
    _, bystander = endpoint(api, customer_backend, "silent")  # all event types: lifecycle.generated only

    lifecycle = create(
        api, {"model": "echo/x", "prompt": "lost", "delivery": {"mode": "webhook", "endpoint_id": failing["id"]}}
    )
    assert wait_status(api, lifecycle["id"])["error"]["code"] == "webhook_exhausted"

    (told,) = arrived(customer_backend, listening)
    assert told["verified"] == [True]  # signed like every webhook, with the listener's own secret
    assert told["payload"]["type"] == "message.attempt.exhausted"
    data = told["payload"]["data"]
    assert data["endpoint_id"] == failing["id"] and data["lifecycle_id"] == lifecycle["id"]
    assert data["event_type"] == "lifecycle.generated" and data["attempts"] == 4
    assert data["webhook_id"].startswith("msg_") and data["webhook_id"] != told["webhook_id"]
    assert received(customer_backend, bystander) == []
    assert listener["id"] != failing["id"]


def test_an_endpoint_disabled_for_failing_is_told_to_the_endpoints_that_listen_for_it(api, customer_backend):
    _, listening = endpoint(api, customer_backend, "silent", event_types=["endpoint.disabled"])
    failing, _ = endpoint(api, customer_backend, "500")
    # It has been failing for longer than WEBHOOK_DISABLE_AFTER_S: its next failure disables it.
    WebhookEndpoint.objects.filter(id=failing["id"]).update(failing_since=timezone.now() - timedelta(days=6))

    create(api, {"model": "echo/x", "prompt": "x", "delivery": {"mode": "webhook", "endpoint_id": failing["id"]}})

    (told,) = arrived(customer_backend, listening)
    assert told["verified"] == [True]
    assert told["payload"]["type"] == "endpoint.disabled"
    assert told["payload"]["data"]["endpoint_id"] == failing["id"]
    assert told["payload"]["data"]["reason"].startswith("failing for over")
    assert api.get(f"/v1/webhook-endpoints/{failing['id']}").json()["enabled"] is False


def test_recover_sends_again_what_failed_since_then(api, customer_backend):
    flaky, scenario = endpoint(api, customer_backend, "500,500,500,500,silent")
    since = timezone.now() - timedelta(minutes=1)
    lifecycle = create(
        api, {"model": "echo/x", "prompt": "again", "delivery": {"mode": "webhook", "endpoint_id": flaky["id"]}}
    )
    assert wait_status(api, lifecycle["id"])["error"]["code"] == "webhook_exhausted"

    recovered = api.post(f"/v1/webhook-endpoints/{flaky['id']}/recover", json={"since": since.isoformat()})

    assert recovered.status_code == 202 and recovered.json() == {"recovered": 1}
    attempts = arrived(customer_backend, scenario, count=5)  # the fifth is answered 200
    assert len({a["webhook_id"] for a in attempts}) == 1  # the same message, as the receiver dedupes by it
    poll_until(
        lambda: api.get(f"/v1/lifecycles/{lifecycle['id']}/deliveries").json()["results"][0]["status"],
        lambda status: status == "succeeded",
        timeout=15,
        what="the recovered delivery succeeded",
    )
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert api.post(f"/v1/webhook-endpoints/{flaky['id']}/recover", json={"since": future}).status_code == 400
    api.patch(f"/v1/webhook-endpoints/{flaky['id']}", json={"enabled": False})
    disabled = api.post(f"/v1/webhook-endpoints/{flaky['id']}/recover", json={"since": since.isoformat()})
    assert disabled.status_code == 409
