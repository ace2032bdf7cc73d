"""/metrics after real lifecycles: counters and histograms from every process, gauges from the DB."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.lifecycle.helpers import create, wait_status
from tests.processes import poll_until
from tests.webhooks.helpers import endpoint

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def scrape(stack) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{stack.base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_a_real_lifecycle_through_every_process(api, stack, customer_backend):
    before = scrape(stack)
    endpoint(api, customer_backend, "500,data")
    lifecycle = create(api, {"model": "echo/x", "prompt": "measured"})
    wait_status(api, lifecycle["id"], timeout=30)

    def delta(samples, name, **labels):
        return value(samples, name, **labels) - value(before, name, **labels)

    after = poll_until(  # the relay observes the broadcast of the last event a moment later
        lambda: scrape(stack),
        lambda s: delta(s, "lifecycle_step_seconds_count", step="broadcast") >= 8,
        timeout=10,
        what="broadcasts observed",
    )
    assert delta(after, "lifecycle_accepted_total") == 1  # web
    assert delta(after, "lifecycle_transitions_total", status="completed") == 1
    assert delta(after, "lifecycle_transitions_total", status="awaiting_callback") == 1
    assert delta(after, "provider_attempts_total", provider="echo", outcome="ok") == 1  # generator
    assert delta(after, "webhook_attempts_total", status_class="5xx") == 1  # celery worker
    assert delta(after, "webhook_attempts_total", status_class="2xx") == 1
    for step in ("queue_wait", "model", "webhook_delivery", "backend_callback", "end_to_end"):
        assert delta(after, "lifecycle_step_seconds_count", step=step) == 1, step
    assert value(after, "outbox_backlog") >= 0
    assert value(after, "webhook_deliveries_due") >= 0
    assert ("lifecycles_live", (("status", "pending"),)) in after
    assert ("generations_in_flight", ()) in after
    lag_groups = {dict(labels)["group"] for name, labels in after if name == "kafka_consumer_lag"}
    assert lag_groups == {"lifecycle-generators"}


def test_open_websockets_are_counted(api, stack):
    import asyncio

    import websockets

    from tests.realtime.helpers import ws_url

    lifecycle = create(api, {"model": "echo/x", "prompt": "watching", "params": {"latency_ms": 3000}})

    async def scenario():
        async with websockets.connect(ws_url(stack, lifecycle["id"], lifecycle["ws_token"])) as socket:
            await socket.recv()
            return await asyncio.to_thread(scrape, stack)

    during = asyncio.run(scenario())
    assert value(during, "websocket_connections") >= 1
