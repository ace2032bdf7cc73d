"""One trace id follows a lifecycle: API → outbox → Kafka headers → generator → webhook → logs."""

from __future__ import annotations

import json
import secrets

import pytest

from lifecycle.models import Lifecycle, OutboxMessage
from tests.lifecycle.helpers import create, wait_status
from tests.webhooks.helpers import endpoint, received

pytestmark = [pytest.mark.django_db(transaction=True)]


def json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue  # celery's banner, daphne's access log
    return lines


@pytest.mark.stack
def test_the_callers_trace_id_reaches_kafka_headers_the_webhook_and_every_processs_logs(api, stack, customer_backend):
    _, scenario = endpoint(api, customer_backend, "500,data")
    trace_id = secrets.token_hex(16)
    caller = f"00-{trace_id}-{secrets.token_hex(8)}-01"

    lifecycle = create(api, {"model": "echo/x", "prompt": "trace me"}, traceparent=caller)
    wait_status(api, lifecycle["id"], timeout=30)

    messages = OutboxMessage.objects.filter(key=lifecycle["id"])
    assert messages.count() >= 8
    assert {m.headers["traceparent"].split("-")[1] for m in messages} == {trace_id}
    webhooks = received(customer_backend, scenario)
    assert [w["traceparent"].split("-")[1] for w in webhooks] == [trace_id, trace_id]
    # Each attempt is a span of its own, a child in the lifecycle's trace.
    stored = Lifecycle.objects.get(id=lifecycle["id"]).traceparent
    span_ids = {w["traceparent"].split("-")[2] for w in webhooks}
    assert len(span_ids) == 2 and stored.split("-")[2] not in span_ids
    for process in ("generator", "delivery"):
        ours = [line for line in json_lines(stack.log(process)) if line.get("lifecycle_id") == lifecycle["id"]]
        assert ours, f"no log line of {process} names the lifecycle"
        assert all(line["trace_id"] == trace_id for line in ours), process
        assert all(line["project_id"] == str(api.project.id) for line in ours), process
        assert all(line["process"] == process for line in ours)


@pytest.mark.stack
def test_a_request_without_traceparent_starts_a_new_trace(api):
    one = create(api, {"model": "echo/x", "prompt": "a"})
    two = create(api, {"model": "echo/x", "prompt": "b"})

    first = OutboxMessage.objects.filter(key=one["id"]).first().headers["traceparent"]
    second = OutboxMessage.objects.filter(key=two["id"]).first().headers["traceparent"]
    assert first.split("-")[1] != second.split("-")[1]


def test_the_api_records_an_accept_span_continuing_the_callers_trace(admin_client, monkeypatch):
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from orchestrator import telemetry
    from tests.conftest import make_project

    exporter = InMemorySpanExporter()
    monkeypatch.setattr(telemetry, "_exported", telemetry._exported)  # the tests after this one build no spans
    telemetry.export_to(SimpleSpanProcessor(exporter))
    _, api_key = make_project()
    trace_id, parent_span = secrets.token_hex(16), secrets.token_hex(8)

    response = admin_client.post(
        "/v1/lifecycles",
        {"model": "echo/x", "prompt": "spans"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {api_key}", "traceparent": f"00-{trace_id}-{parent_span}-01"},
    )

    assert response.status_code == 202
    (accept,) = [s for s in exporter.get_finished_spans() if s.name == "lifecycle.accept"]
    assert f"{accept.context.trace_id:032x}" == trace_id
    assert f"{accept.parent.span_id:016x}" == parent_span
    stored = Lifecycle.objects.get(id=response.json()["id"]).traceparent
    assert stored == f"00-{trace_id}-{accept.context.span_id:016x}-01"


def test_without_an_exporter_spans_hand_on_the_trace_with_a_span_id_of_their_own(monkeypatch):
    from orchestrator import telemetry

    monkeypatch.setattr(telemetry, "_exported", False)
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)

    caller = f"00-{trace_id}-{caller_span}-01"
    with telemetry.span("outer", parent=caller) as outer, telemetry.span("inner") as inner:  # inner: outer's child
        pass
    with telemetry.span("next") as unrelated:  # no current span any more: a new trace
        pass

    assert outer.split("-")[1] == inner.split("-")[1] == trace_id
    assert len({caller_span, outer.split("-")[2], inner.split("-")[2]}) == 3
    assert unrelated.split("-")[1] != trace_id


def test_without_an_exporter_a_span_keeps_its_callers_sampling_decision_as_opentelemetry_does(monkeypatch):
    from orchestrator import telemetry

    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    seen = {}
    for exported in (False, True):
        monkeypatch.setattr(telemetry, "_exported", exported)
        for flags in ("00", "01"):
            with telemetry.span("x", parent=f"00-{trace_id}-{caller_span}-{flags}") as child:
                seen[exported, flags] = child.split("-")[3]

    assert seen == {(False, "00"): "00", (False, "01"): "01", (True, "00"): "00", (True, "01"): "01"}
