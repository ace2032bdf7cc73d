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


@pytest.mark.django_db
def test_in_production_metrics_and_readiness_details_need_the_metrics_token(client, settings):
    settings.DEBUG = False
    settings.METRICS_TOKEN = ""
    refused = client.get("/metrics")
    assert refused.status_code == 403
    assert "set METRICS_TOKEN" in refused.json()["error"]["message"]
    assert client.get("/readyz").json() == {"status": "ready"}  # probes see ready or not, nothing inside

    settings.METRICS_TOKEN = "scrape-me"
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    scraped = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert scraped.status_code == 200 and b"lifecycle_transitions_total" in scraped.content
    detailed = client.get("/readyz", headers={"Authorization": "Bearer scrape-me"}).json()
    assert set(detailed["checks"]) == {"database", "redis", "kafka"}
