"""Every attempt is bounded: one deadline for connect, send and the whole response, a response read only up
to a cap, and TLS verified for each endpoint's own hostname, whatever connection the pool holds."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from unittest import mock

import httpx
import pytest
import trustme
from django.test import override_settings

from orchestrator.embedded import PROJECT_DIR, free_port, wait_until
from tests.lifecycle.helpers import create, wait_status
from tests.webhooks.helpers import endpoint, received, send_once
from webhooks import sender

pytestmark = [pytest.mark.django_db(transaction=True)]


def deliveries(api, lifecycle_id) -> list[dict]:
    return api.get(f"/v1/lifecycles/{lifecycle_id}/deliveries").json()["results"]


@pytest.mark.stack
def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_deadline_and_retried(api, customer_backend):
    endpoint(api, customer_backend, "drip,silent")

    lifecycle = create(api, {"model": "echo/x", "prompt": "slowly", "delivery": {"mode": "webhook"}})
    final = wait_status(api, lifecycle["id"], timeout=30)

    assert final["status"] == "completed", final
    dripped, delivered = deliveries(api, lifecycle["id"])[0]["attempts"]
    assert dripped["outcome"] == "failed"
    assert dripped["status_code"] is None  # the answer never finished, so it counts as none
    assert "timed out" in dripped["error"]
    assert 1900 <= dripped["latency_ms"] < 3000  # WEBHOOK_TIMEOUT_S is 2 s in the tests: 20 s of drip cut short
    assert delivered["outcome"] == "succeeded"


@pytest.mark.stack
def test_a_huge_response_is_read_up_to_the_cap_and_an_excerpt_kept(api, customer_backend):
    endpoint(api, customer_backend, "huge")

    lifecycle = create(api, {"model": "echo/x", "prompt": "big", "delivery": {"mode": "webhook"}})
    final = wait_status(api, lifecycle["id"], timeout=20)

    assert final["status"] == "completed", final
    (attempt,) = deliveries(api, lifecycle["id"])[0]["attempts"]
    assert attempt["outcome"] == "succeeded"
    assert len(attempt["response_excerpt"]) == sender.RESPONSE_EXCERPT_BYTES
    assert attempt["response_excerpt"].startswith("[0,0,")


@pytest.mark.stack
def test_an_endpoint_gets_no_more_attempts_in_flight_than_its_cap(api, customer_backend):
    """WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT is 1 in the tests: three deliveries to a receiver that hangs are
    sent one at a time, across batches of claims, and none is lost."""
    _, scenario = endpoint(api, customer_backend, "hang,silent")
    lifecycles = [
        create(api, {"model": "echo/x", "prompt": f"one of three {i}", "delivery": {"mode": "webhook"}})
        for i in range(3)
    ]
    wait_until(lambda: len(received(customer_backend, scenario)) >= 1, timeout=20, what="the first attempt")
    time.sleep(1.0)  # under the 2 s deadline of the hanging attempt: nothing else may be sent meanwhile

    assert len(received(customer_backend, scenario)) == 1
    for lifecycle in lifecycles:
        assert wait_status(api, lifecycle["id"], timeout=40)["status"] == "completed"


@pytest.mark.stack
def test_a_delivery_whose_worker_was_killed_mid_attempt_is_sent_again_by_another(api, stack, customer_backend):
    _, scenario = endpoint(api, customer_backend, "hang,silent")
    lifecycle = create(api, {"model": "echo/x", "prompt": "orphaned", "delivery": {"mode": "webhook"}})
    wait_until(lambda: len(received(customer_backend, scenario)) >= 1, timeout=20, what="the first attempt")
    stack.kill("delivery")  # mid-attempt: the delivery stays sending under its lease, nothing recorded
    stack.start("delivery")

    final = wait_status(api, lifecycle["id"], timeout=30)

    assert final["status"] == "completed", final
    (delivery,) = deliveries(api, lifecycle["id"])
    assert delivery["status"] == "succeeded"
    assert [(a["number"], a["outcome"]) for a in delivery["attempts"]] == [(2, "succeeded")]
    assert len(received(customer_backend, scenario)) == 2


@pytest.fixture(scope="module")
def tls_receiver(tmp_path_factory):
    """An HTTPS receiver on 127.0.0.1 whose certificate names only ``a.hooks.test``, and the CA that signed it."""
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    issued = ca.issue_cert("a.hooks.test")
    issued.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    port = free_port()
    command = [sys.executable, "-m", "tests.fakes.tls_server", str(port), folder / "server.pem", folder / "server.pem"]
    proc = subprocess.Popen(command, cwd=PROJECT_DIR)

    def up() -> bool:
        try:
            return httpx.get(f"https://127.0.0.1:{port}/", verify=False, timeout=1).status_code == 200  # noqa: S501
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=20, what="the TLS receiver")
    yield port, str(folder / "ca.pem")
    proc.terminate()
    proc.wait(timeout=10)


def resolving_every_hooks_test_name_to_loopback():
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        return real("127.0.0.1" if str(host).endswith(".hooks.test") else host, *args, **kwargs)

    return mock.patch("socket.getaddrinfo", resolver)


@override_settings(WEBHOOK_ALLOWED_NETWORKS=["127.0.0.1/32"])
def test_tls_is_verified_for_each_hostname_even_when_two_share_an_ip(tls_receiver):
    """A pooled connection to 127.0.0.1, verified for a.hooks.test, is not reused for b.hooks.test: that one
    gets its own connection, whose certificate does not name it."""
    port, ca = tls_receiver

    async def attempts():
        client = sender.Sender(ca_bundle=ca)
        try:
            return [
                await client.send(f"https://{host}.hooks.test:{port}/hook", headers={}, body=b"{}", timeout=5)
                for host in ("a", "b", "a")
            ]
        finally:
            await client.aclose()

    with resolving_every_hooks_test_name_to_loopback():
        first, other, again = asyncio.run(attempts())

    assert first.outcome == "succeeded", first
    assert other.outcome == "failed"
    assert "CERTIFICATE_VERIFY_FAILED" in other.error or "hostname" in other.error.lower(), other.error
    assert again.outcome == "succeeded", again


@override_settings(WEBHOOK_ALLOWED_NETWORKS=["127.0.0.1/32"])
def test_a_certificate_from_an_unknown_ca_is_refused(tls_receiver):
    port, _ = tls_receiver

    with resolving_every_hooks_test_name_to_loopback():
        result = send_once(f"https://a.hooks.test:{port}/hook")  # certifi's CAs: ours is not among them

    assert result.outcome == "failed"
    assert "CERTIFICATE_VERIFY_FAILED" in result.error, result.error
