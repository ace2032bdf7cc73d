"""No lifecycle is left in ``delivering`` by what happened to its delivery: an endpoint deleted mid-flight
fails it in the same transaction, and a sweep ends whatever slipped through, saying why."""

from __future__ import annotations

import pytest
from django.db import transaction

from tests.lifecycle.helpers import create, timeline, wait_status
from tests.webhooks.helpers import endpoint
from webhooks.models import Delivery
from webhooks.services import STRANDED_AFTER_S, deliveries_lock

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def test_deleting_the_endpoint_mid_delivery_fails_the_lifecycle_saying_why(api, customer_backend):
    hook, _ = endpoint(api, customer_backend, "500")
    lifecycle = create(api, {"model": "echo/x", "prompt": "to nowhere"})
    wait_status(api, lifecycle["id"], {"delivering"})

    assert api.delete(f"/v1/webhook-endpoints/{hook['id']}").status_code == 204
    final = wait_status(api, lifecycle["id"], timeout=10)

    assert final["status"] == "failed"
    assert final["error"]["code"] == "webhook_exhausted"
    assert final["error"]["step"] == "webhook"
    failed = [e for e in timeline(api, lifecycle["id"]) if e["event"] == "lifecycle.failed"]
    assert failed[0]["payload"]["error"]["details"]["reason"] == "endpoint_deleted"


def test_the_sweep_ends_a_lifecycle_whose_delivery_is_gone(api, customer_backend):
    endpoint(api, customer_backend, "500")
    lifecycle = create(api, {"model": "echo/x", "prompt": "lost on the way"})
    wait_status(api, lifecycle["id"], {"delivering"})

    with transaction.atomic():  # as an older version's crash could leave it
        deliveries = Delivery.objects.filter(lifecycle_id=lifecycle["id"])
        deliveries_lock(deliveries)
        deliveries.delete()
    final = wait_status(api, lifecycle["id"], timeout=STRANDED_AFTER_S + 15)

    assert final["status"] == "failed"
    assert final["error"]["code"] == "webhook_exhausted"
    failed = [e for e in timeline(api, lifecycle["id"]) if e["event"] == "lifecycle.failed"]
    assert failed[0]["payload"]["error"]["details"] == {"reason": "no_delivery", "delivery_id": None, "swept": True}
