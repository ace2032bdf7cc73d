"""Security properties checked end to end against the running service: keys, secrets, signatures, DNS
rebinding and header limits. (Tenant isolation, token scope and expiry, SSRF ranges, body size and rate
limits are tested next to the features they guard: tests/lifecycle, tests/webhooks, tests/realtime.)"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from unittest import mock

import httpx
import pytest
from django.db import connection
from django.test import override_settings
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from lifecycle.models import ApiKey
from lifecycle.services import api_key_revoke
from tests.lifecycle.helpers import create, timeline, wait_status
from tests.processes import PROCFILE
from tests.webhooks.helpers import endpoint, received, send_once

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def rows_containing(text: str) -> dict[str, int]:
    """Every table in the database with a row whose text form contains ``text``."""
    found = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            quoted = connection.ops.quote_name(table)
            cursor.execute(f"SELECT count(*) FROM {quoted} t WHERE t::text LIKE %s", [f"%{text}%"])  # noqa: S608
            if count := cursor.fetchone()[0]:
                found[table] = count
    return found


def test_no_plaintext_api_key_is_in_any_table_or_any_log(api, stack, customer_backend):
    _, api_key = api.project, api.headers["Authorization"].removeprefix("Bearer ")
    endpoint(api, customer_backend, "data")
    lifecycle = create(api, {"model": "echo/x", "prompt": "where is my key?"})
    wait_status(api, lifecycle["id"])
    api.get("/v1/lifecycles")
    httpx.get(f"{stack.base_url}/v1/lifecycles", headers={"Authorization": f"Bearer {api_key}x"})

    assert rows_containing(api_key) == {}
    # "lk_<12 hex>_<secret>": the secret may itself hold underscores, so it is everything after the second.
    secret_part = api_key.split("_", 2)[2]
    assert len(secret_part) >= 40
    assert rows_containing(secret_part) == {}
    for process in PROCFILE:
        assert api_key not in stack.log(process), process
        assert secret_part not in stack.log(process), process


def test_a_revoked_key_is_refused_at_once(api, stack):
    # Enough requests that every web worker and the realtime process (the OpenAI-compatible API) hold the
    # key in memory (lifecycle/keycache.py): the revocation must still win at once in each of them.
    assert {api.get("/v1/lifecycles").status_code for _ in range(20)} == {200}
    assert {api.get("/v1/models").status_code for _ in range(5)} == {200}

    api_key_revoke(key=ApiKey.objects.get(project=api.project))

    refused = api.get("/v1/lifecycles")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"
    assert {api.get("/v1/lifecycles").status_code for _ in range(20)} == {401}
    assert {api.get("/v1/models").status_code for _ in range(5)} == {401}
    assert api.post("/v1/lifecycles", json={"model": "echo/x", "prompt": "x"}).status_code == 401


def test_no_secret_reaches_a_timeline_or_the_lifecycle_resource(api, stack, customer_backend):
    hook, scenario = endpoint(api, customer_backend, "data")
    lifecycle = create(api, {"model": "echo/x", "prompt": "keep it secret"})
    wait_status(api, lifecycle["id"])
    (webhook,) = received(customer_backend, scenario)
    secrets = {
        "endpoint secret": hook["secret"],
        "endpoint secret key": hook["secret"].removeprefix("whsec_"),
        "callback token": webhook["payload"]["data"]["callback"]["token"],
        "realtime token": lifecycle["ws_token"],
        "api key": api.headers["Authorization"].removeprefix("Bearer "),
        "signature": webhook["signature"].split(",", 1)[1],
    }

    resource = api.get(f"/v1/lifecycles/{lifecycle['id']}").json()
    exposed = json.dumps(timeline(api, lifecycle["id"])) + json.dumps(resource)
    stored = rows_containing(hook["secret"])

    assert [name for name, secret in secrets.items() if secret in exposed] == []
    # The endpoint secret is stored nowhere in clear: only encrypted, on its endpoint (it must sign; the
    # encryption: tests/orchestrator/test_secrets_at_rest.py).
    assert stored == {}


class _Later(datetime):
    """``datetime`` as a verifier running six minutes after the webhook was sent sees it."""

    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz=tz) + timedelta(minutes=6)


def test_a_webhook_replayed_outside_the_tolerance_is_rejected_by_the_standard_verifier(api, customer_backend):
    hook, scenario = endpoint(api, customer_backend, "data")
    lifecycle = create(api, {"model": "echo/x", "prompt": "replay me"})
    wait_status(api, lifecycle["id"])
    (webhook,) = received(customer_backend, scenario)
    verifier = Webhook(hook["secret"])
    raw, headers = webhook["raw"], webhook["headers"]

    verifier.verify(raw, headers)  # as delivered: valid
    with mock.patch("standardwebhooks.webhooks.datetime", _Later), pytest.raises(WebhookVerificationError) as old:
        verifier.verify(raw, headers)
    assert "too old" in str(old.value)
    # Freshening the timestamp breaks the signature, which covers it.
    fresh = headers | {"webhook-timestamp": str(int(datetime.now(tz=UTC).timestamp()) + 60)}
    with pytest.raises(WebhookVerificationError):
        verifier.verify(raw, fresh)
    # So does any change to the body.
    with pytest.raises(WebhookVerificationError):
        verifier.verify(raw.replace("replay me", "replay mE"), headers)


@override_settings(WEBHOOK_ALLOWED_NETWORKS=["127.0.0.1/32"])
def test_dns_rebinding_cannot_move_a_vetted_delivery(customer_backend):
    """The name is resolved once, vetted, and the connection goes to that address: a resolver that answers
    differently the second time (to the cloud metadata address) is never asked again."""
    port = int(customer_backend.rsplit(":", 1)[1])
    answers = iter(["127.0.0.1", "169.254.169.254"])
    lookups = []

    real_getaddrinfo = socket.getaddrinfo

    def rebinding_resolver(host, *args, **kwargs):
        if host != "hooks.customer.test":  # the HTTP client's own lookups (of the vetted IP) go through
            return real_getaddrinfo(host, *args, **kwargs)
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    with mock.patch("socket.getaddrinfo", rebinding_resolver):
        result = send_once(f"http://hooks.customer.test:{port}/hooks/rebind/silent")

    assert result.outcome == "succeeded", result
    assert lookups == ["hooks.customer.test"]
    assert len(received(customer_backend, "rebind")) == 1

    # And a name that resolves to a refused address first is refused before any connection.
    answers = iter(["169.254.169.254"])
    with mock.patch("socket.getaddrinfo", rebinding_resolver):
        refused = send_once(f"http://hooks.customer.test:{port}/hooks/rebind/silent")
    assert refused.outcome == "refused"
    assert len(received(customer_backend, "rebind")) == 1


def test_oversized_headers_are_refused_and_the_service_carries_on(api, stack):
    huge = {"X-Padding": "a" * 70_000}

    try:
        status = httpx.get(f"{stack.base_url}/v1/lifecycles", headers=huge, timeout=10).status_code
    except httpx.RemoteProtocolError:
        status = None  # the server hung up on it: also a refusal

    assert status is None or 400 <= status < 500, status
    assert api.get("/v1/lifecycles").status_code == 200
