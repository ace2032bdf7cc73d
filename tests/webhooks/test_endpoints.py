"""Webhook endpoints over the API: CRUD, secrets shown once, rotation with a grace period, isolation,
automatic disabling of endpoints that keep failing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import api_client, make_project
from tests.lifecycle.helpers import create, wait_status
from tests.processes import poll_until
from tests.webhooks.helpers import endpoint, received, share_secrets
from webhooks.models import WebhookEndpoint

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def test_the_secret_is_shown_on_create_only(api, customer_backend):
    created, _ = endpoint(api, customer_backend, "silent", description="orders")

    assert created["secret"].startswith("whsec_")
    shown = api.get(f"/v1/webhook-endpoints/{created['id']}").json()
    assert "secret" not in shown
    assert shown["description"] == "orders"
    assert [e["id"] for e in api.get("/v1/webhook-endpoints").json()["results"]] == [created["id"]]


def test_update_and_delete(api, customer_backend):
    created, _ = endpoint(api, customer_backend, "silent")

    patched = api.patch(f"/v1/webhook-endpoints/{created['id']}", json={"enabled": False, "description": "paused"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["enabled"] is False
    assert patched.json()["disabled_reason"]
    refused = api.post("/v1/lifecycles", json={"model": "echo/x", "prompt": "x", "delivery": {"mode": "webhook"}})
    assert refused.status_code == 400
    assert "delivery" in refused.json()["error"]["details"]

    assert api.delete(f"/v1/webhook-endpoints/{created['id']}").status_code == 204
    assert api.get(f"/v1/webhook-endpoints/{created['id']}").status_code == 404


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1/hook", "http://169.254.169.254/", "ftp://example.com/x", "not a url"],
)
def test_an_endpoint_url_the_guard_refuses_is_a_400(api, url):
    response = api.post("/v1/webhook-endpoints", json={"url": url})

    assert response.status_code == 400, response.text
    assert "url" in response.json()["error"]["details"]


def test_an_unknown_event_type_is_a_400(api, customer_backend):
    response = api.post("/v1/webhook-endpoints", json={"url": f"{customer_backend}/x", "event_types": ["nope"]})

    assert response.status_code == 400


def test_another_projects_endpoints_and_deliveries_are_not_found(api, stack, customer_backend):
    created, _ = endpoint(api, customer_backend, "silent")
    lifecycle = create(api, {"model": "echo/x", "prompt": "mine", "delivery": {"mode": "webhook"}})
    wait_status(api, lifecycle["id"])
    (delivery,) = api.get(f"/v1/lifecycles/{lifecycle['id']}/deliveries").json()["results"]
    _, other_key = make_project("other")

    with api_client(stack, other_key) as other:
        assert other.get(f"/v1/webhook-endpoints/{created['id']}").status_code == 404
        assert other.patch(f"/v1/webhook-endpoints/{created['id']}", json={"enabled": False}).status_code == 404
        assert other.delete(f"/v1/webhook-endpoints/{created['id']}").status_code == 404
        assert other.post(f"/v1/webhook-endpoints/{created['id']}/rotate-secret").status_code == 404
        assert other.get(f"/v1/lifecycles/{lifecycle['id']}/deliveries").status_code == 404
        assert other.post(f"/v1/deliveries/{delivery['id']}/resend").status_code == 404
        assert other.get("/v1/webhook-endpoints").json()["results"] == []
        refused = other.post(
            "/v1/lifecycles", json={"model": "echo/x", "prompt": "x", "delivery": {"endpoint_id": created["id"]}}
        )
        assert refused.status_code == 400


def test_after_rotation_both_secrets_sign_during_the_grace_period(api, customer_backend):
    created, scenario = endpoint(api, customer_backend, "silent")
    old_secret = created["secret"]

    rotated = api.post(f"/v1/webhook-endpoints/{created['id']}/rotate-secret", json={"grace_s": 3600})
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != old_secret
    share_secrets(customer_backend, scenario, [old_secret, new_secret])

    lifecycle = create(api, {"model": "echo/x", "prompt": "rotated", "delivery": {"mode": "webhook"}})
    wait_status(api, lifecycle["id"])

    (webhook,) = received(customer_backend, scenario)
    assert webhook["verified"] == [True, True]  # a receiver on either secret accepts it
    assert len(webhook["signature"].split(" ")) == 2


def test_without_grace_only_the_new_secret_signs(api, customer_backend):
    created, scenario = endpoint(api, customer_backend, "silent")
    new_secret = api.post(f"/v1/webhook-endpoints/{created['id']}/rotate-secret", json={"grace_s": 0}).json()["secret"]
    share_secrets(customer_backend, scenario, [created["secret"], new_secret])

    lifecycle = create(api, {"model": "echo/x", "prompt": "rotated", "delivery": {"mode": "webhook"}})
    wait_status(api, lifecycle["id"])

    assert received(customer_backend, scenario)[0]["verified"] == [False, True]


def test_redirects_are_not_followed(api, customer_backend):
    endpoint(api, customer_backend, "redirect,data")

    lifecycle = create(api, {"model": "echo/x", "prompt": "moved"})
    final = wait_status(api, lifecycle["id"], timeout=30)

    assert final["status"] == "completed"
    first = api.get(f"/v1/lifecycles/{lifecycle['id']}/deliveries").json()["results"][0]["attempts"][0]
    assert (first["outcome"], first["status_code"]) == ("failed", 302)


def test_an_endpoint_failing_past_the_disable_period_is_disabled_with_the_reason(api, customer_backend):
    created, _ = endpoint(api, customer_backend, "500")
    WebhookEndpoint.objects.filter(id=created["id"]).update(failing_since=timezone.now() - timedelta(days=6))

    lifecycle = create(api, {"model": "echo/x", "prompt": "anyone?"})
    final = wait_status(api, lifecycle["id"], timeout=30)

    assert final["status"] == "failed"
    assert final["error"]["code"] == "webhook_exhausted"
    shown = poll_until(
        lambda: api.get(f"/v1/webhook-endpoints/{created['id']}").json(),
        lambda e: not e["enabled"],
        timeout=10,
        what="endpoint disabled",
    )
    assert "HTTP 500" in shown["disabled_reason"]
    assert shown["disabled_at"]
