"""Webhook delivery and the callback round trip, end to end with a real customer backend process."""

from __future__ import annotations

import time

import pytest

from tests.lifecycle.helpers import create, get, timeline, wait_status
from tests.processes import poll_until
from tests.webhooks.helpers import endpoint, received

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def events(api, lifecycle_id) -> list[str]:
    return [e["event"] for e in timeline(api, lifecycle_id)]


def deliveries(api, lifecycle_id) -> list[dict]:
    response = api.get(f"/v1/lifecycles/{lifecycle_id}/deliveries")
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_the_backend_verifies_the_signature_and_calls_back_with_data(api, customer_backend):
    hook, scenario = endpoint(api, customer_backend, "data")

    lifecycle = create(api, {"model": "echo/x", "prompt": "ship it", "metadata": {"order": "42"}})
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "completed", final
    assert final["delivery"]["mode"] == "webhook_callback"
    assert final["delivery"]["endpoint_id"] == hook["id"]
    assert final["output"] == "ship it"
    assert final["result"] == {"enriched": "SHIP IT", "lifecycle_id": lifecycle["id"]}
    (webhook,) = received(customer_backend, scenario)
    assert webhook["verified"] == [True]
    assert webhook["webhook_id"].startswith("msg_")
    assert webhook["traceparent"].startswith("00-")
    body = webhook["payload"]
    assert body["type"] == "lifecycle.generated"
    assert {"lifecycle_id", "status", "model", "output", "usage", "metadata", "callback"} <= set(body["data"])
    assert body["data"]["metadata"] == {"order": "42"}
    assert body["data"]["callback"]["url"].endswith(f"/v1/lifecycles/{lifecycle['id']}/callback")
    assert events(api, lifecycle["id"]) == [
        "lifecycle.created",
        "lifecycle.generating",
        "generation.attempt",
        "lifecycle.delivering",
        "webhook.attempt",
        "lifecycle.awaiting_callback",
        "callback.received",
        "lifecycle.completed",
    ]


def test_a_callback_that_races_ahead_of_the_delivery_response_still_completes(api, customer_backend):
    endpoint(api, customer_backend, "inline")

    lifecycle = create(api, {"model": "echo/x", "prompt": "quick"})
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "completed"
    assert final["result"]["enriched"] == "QUICK"
    poll_until(
        lambda: deliveries(api, lifecycle["id"])[0]["status"], lambda s: s == "succeeded", timeout=10, what="succeeded"
    )


def test_the_backend_rejecting_the_result_fails_the_lifecycle_with_its_message(api, customer_backend):
    endpoint(api, customer_backend, "error")

    lifecycle = create(api, {"model": "echo/x", "prompt": "buy"})
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "failed"
    assert final["error"]["code"] == "backend_rejected"
    assert final["error"]["step"] == "callback"
    assert final["error"]["message"] == "That item is no longer available."
    assert final["error"]["details"]["backend_code"] == "out_of_stock"


def test_a_backend_that_never_calls_back_times_the_lifecycle_out(api, customer_backend):
    endpoint(api, customer_backend, "silent")

    lifecycle = create(api, {"model": "echo/x", "prompt": "hello?", "delivery": {"callback_timeout_s": 2}})
    final = wait_status(api, lifecycle["id"], timeout=30)

    assert final["status"] == "failed"
    assert final["error"]["code"] == "callback_timeout"
    assert final["error"]["step"] == "callback"


def test_two_500s_then_success_is_three_attempts_with_one_webhook_id(api, customer_backend):
    _, scenario = endpoint(api, customer_backend, "500,500,data")

    lifecycle = create(api, {"model": "echo/x", "prompt": "persist"})
    final = wait_status(api, lifecycle["id"], timeout=40)

    assert final["status"] == "completed", final
    got = received(customer_backend, scenario)
    assert len(got) == 3
    assert len({r["webhook_id"] for r in got}) == 1
    assert all(r["verified"] == [True] for r in got)
    (delivery,) = deliveries(api, lifecycle["id"])
    assert delivery["status"] == "succeeded"
    assert [(a["number"], a["outcome"], a["status_code"]) for a in delivery["attempts"]] == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "succeeded", 200),
    ]


@pytest.mark.parametrize("fault", ["hang", "reset"])
def test_timeouts_and_connection_resets_are_retried(api, customer_backend, fault):
    endpoint(api, customer_backend, f"{fault},data")

    lifecycle = create(api, {"model": "echo/x", "prompt": "again"})
    final = wait_status(api, lifecycle["id"], timeout=40)

    assert final["status"] == "completed", final
    first, second = deliveries(api, lifecycle["id"])[0]["attempts"]
    assert first["outcome"] == "failed"
    assert first["error"]
    assert second["outcome"] == "succeeded"


def test_the_abort_header_stops_retries_and_fails_the_lifecycle(api, customer_backend):
    _, scenario = endpoint(api, customer_backend, "abort")

    lifecycle = create(api, {"model": "echo/x", "prompt": "nope"})
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "failed"
    assert final["error"]["code"] == "webhook_exhausted"
    assert final["error"]["step"] == "webhook"
    (delivery,) = deliveries(api, lifecycle["id"])
    assert delivery["status"] == "aborted"
    assert len(delivery["attempts"]) == 1
    assert len(received(customer_backend, scenario)) == 1


def test_an_endpoint_that_always_fails_exhausts_the_schedule(api, customer_backend):
    endpoint(api, customer_backend, "500")

    lifecycle = create(api, {"model": "echo/x", "prompt": "doomed"})
    final = wait_status(api, lifecycle["id"], timeout=40)

    assert final["status"] == "failed"
    assert final["error"]["code"] == "webhook_exhausted"
    (delivery,) = deliveries(api, lifecycle["id"])
    assert delivery["status"] == "exhausted"
    assert len(delivery["attempts"]) == 4  # the first attempt and the 3 retries of the test schedule
    assert events(api, lifecycle["id"]).count("webhook.attempt") == 4


def test_mode_webhook_completes_once_delivered_with_the_output_as_result(api, customer_backend):
    _, scenario = endpoint(api, customer_backend, "silent")

    lifecycle = create(api, {"model": "echo/x", "prompt": "fyi", "delivery": {"mode": "webhook"}})
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "completed"
    assert final["result"] == "fyi"
    (webhook,) = received(customer_backend, scenario)
    assert "callback" not in webhook["payload"]["data"]


def test_mode_direct_skips_the_endpoint(api, customer_backend):
    _, scenario = endpoint(api, customer_backend, "data")

    lifecycle = create(api, {"model": "echo/x", "prompt": "just me", "delivery": {"mode": "direct"}})
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "completed"
    assert final["result"] == "just me"
    assert received(customer_backend, scenario) == []


def test_resend_delivers_the_same_message_again(api, customer_backend):
    _, scenario = endpoint(api, customer_backend, "silent")
    lifecycle = create(api, {"model": "echo/x", "prompt": "twice", "delivery": {"mode": "webhook"}})
    wait_status(api, lifecycle["id"])
    (delivery,) = deliveries(api, lifecycle["id"])

    response = api.post(f"/v1/deliveries/{delivery['id']}/resend")

    assert response.status_code == 202, response.text
    got = poll_until(lambda: received(customer_backend, scenario), lambda r: len(r) == 2, timeout=15, what="resend")
    assert got[0]["webhook_id"] == got[1]["webhook_id"]


def test_a_hanging_endpoint_does_not_delay_another_endpoints_delivery(api, customer_backend):
    slow, slow_scenario = endpoint(api, customer_backend, "hang")
    fast, _ = endpoint(api, customer_backend, "data")
    stuck = [
        create(api, {"model": "echo/x", "prompt": f"slow {i}", "delivery": {"endpoint_id": slow["id"]}})
        for i in range(4)
    ]
    poll_until(lambda: received(customer_backend, slow_scenario), lambda r: len(r) >= 1, timeout=20, what="hang")

    started = time.monotonic()
    quick = create(api, {"model": "echo/x", "prompt": "fast lane", "delivery": {"endpoint_id": fast["id"]}})
    final = wait_status(api, quick["id"], timeout=20)

    assert final["status"] == "completed"
    assert time.monotonic() - started < 4  # not queued behind four 2-second timeouts
    assert all(get(api, s["id"])["status"] == "delivering" for s in stuck)
