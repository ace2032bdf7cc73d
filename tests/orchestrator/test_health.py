"""Readiness really checks each backing server: stop one and /readyz says which."""

from __future__ import annotations

import httpx
import pytest

from orchestrator.embedded import EmbeddedStack, running
from tests.processes import ServiceProcesses


def test_healthz_answers_without_touching_backing_services(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.stack
@pytest.mark.parametrize("server, check", [("postgres", "database"), ("redis", "redis"), ("kafka", "kafka")])
def test_readyz_fails_and_names_the_server_that_stopped(tmp_path, server, check):
    with running(EmbeddedStack.on_free_ports(tmp_path / "servers", ephemeral=True)) as servers:
        web = ServiceProcesses.create(log_dir=tmp_path / "logs", **servers.environ())
        web.start("web")
        try:
            ready = httpx.get(f"{web.base_url}/readyz", timeout=15)
            assert ready.status_code == 200, ready.text
            assert ready.json()["status"] == "ready"

            servers.server(server).stop()

            unready = httpx.get(f"{web.base_url}/readyz", timeout=15)
            assert unready.status_code == 503
            body = unready.json()
            assert body["status"] == "unavailable"
            assert body["checks"][check]["ok"] is False
            assert body["checks"][check]["error"]
            others = {name: result["ok"] for name, result in body["checks"].items() if name != check}
            assert all(others.values()), others
        finally:
            web.stop_all()
