"""Server-Sent Events (``GET /v1/lifecycles/{id}/events``) and ``Prefer: wait``, against the realtime process
over HTTP, as a client that cannot open a WebSocket would use them."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from django.conf import settings

from lifecycle.services import api_key_create, api_key_revoke
from tests.conftest import api_client
from tests.lifecycle.helpers import create, wait_status
from tests.realtime.helpers import collect, token_expiring_in

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def realtime_http(stack) -> str:
    return f"http://127.0.0.1:{stack.env['REALTIME_PORT']}"


def read_events(url: str, *, timeout: float = 30, **headers) -> tuple[httpx.Response, list[dict]]:
    """Every Server-Sent Event until the server ends the response: ``{"id", "data"}``, ``data`` parsed."""
    events, current = [], {"id": None, "data": []}
    with httpx.stream("GET", url, headers=headers, timeout=timeout) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            for line in response.iter_lines():
                if line == "":
                    if current["data"]:
                        events.append({"id": current["id"], "data": json.loads("\n".join(current["data"]))})
                    current = {"id": None, "data": []}
                elif line.startswith("data:"):
                    current["data"].append(line[5:].strip())
                elif line.startswith("id:"):
                    current["id"] = line[3:].strip()
        else:
            response.read()
    return response, events


def test_the_event_stream_is_the_sockets_stream_with_seq_as_id(api, stack):
    lifecycle = create(api, {"model": "echo/x", "prompt": "over sse", "params": {"latency_ms": 300}})
    assert lifecycle["links"]["events"] == f"{realtime_http(stack)}/v1/lifecycles/{lifecycle['id']}/events"
    response, events = read_events(f"{lifecycle['links']['events']}?token={lifecycle['ws_token']}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert events[0]["data"]["type"] == "snapshot" and events[0]["id"] is None
    timeline = [e for e in events if e["data"]["type"] == "event"]
    assert [int(e["id"]) for e in timeline] == [e["data"]["seq"] for e in timeline]
    assert [e["data"]["seq"] for e in timeline] == list(range(1, len(timeline) + 1))  # from the start, no gap
    assert timeline[-1]["data"]["event"] == "lifecycle.completed"
    assert timeline[-1]["data"]["result"] == "over sse"
    # The very messages a socket gets, the same JSON.
    messages, _ = collect(f"{lifecycle['links']['websocket']}?token={lifecycle['ws_token']}")
    assert [m for m in messages if m["type"] == "event"] == [e["data"] for e in timeline]


def test_last_event_id_resumes_after_it_and_a_stream_heard_to_the_end_answers_204(api, stack):
    lifecycle = create(api, {"model": "echo/x", "prompt": "resume me"})
    wait_status(api, lifecycle["id"])
    url = f"{realtime_http(stack)}/v1/lifecycles/{lifecycle['id']}/events"
    bearer = {"Authorization": f"Bearer {lifecycle['ws_token']}"}
    _, everything = read_events(url, **bearer)
    seqs = [e["data"]["seq"] for e in everything if e["data"]["type"] == "event"]
    assert len(seqs) >= 3

    response, resumed = read_events(url, **bearer, **{"Last-Event-ID": str(seqs[1])})
    assert response.status_code == 200
    assert resumed[0]["data"]["type"] == "snapshot"
    assert [e["data"]["seq"] for e in resumed[1:]] == seqs[2:]

    response, _ = read_events(f"{url}?since={seqs[0]}", **bearer)
    assert response.status_code == 200
    response, nothing = read_events(url, **bearer, **{"Last-Event-ID": str(seqs[-1])})
    assert response.status_code == 204 and nothing == []


def test_a_stream_without_a_good_token_gets_a_json_error_and_no_data(api, stack):
    mine = create(api, {"model": "echo/x", "prompt": "mine"})
    other = create(api, {"model": "echo/x", "prompt": "another"})
    url = f"{realtime_http(stack)}/v1/lifecycles/{mine['id']}/events"
    cases = {
        "": 401,
        "?token=not-a-token": 401,
        f"?token={other['ws_token']}": 404,  # a token for another lifecycle opens nothing
    }
    for query, expected in cases.items():
        response = httpx.get(url + query, timeout=10)
        assert response.status_code == expected, (query, response.text)
        assert response.headers["content-type"] == "application/json"
        assert "error" in response.json()
    # The web process's sync workers would hold a thread per stream: it says where streams are served.
    response = httpx.get(f"{stack.base_url}/v1/lifecycles/{mine['id']}/events?token={mine['ws_token']}")
    assert response.status_code == 421 and response.json()["error"]["code"] == "misdirected_request"


def test_prefer_wait_answers_with_the_final_resource_once_it_ends(api, stack):
    auth = {"Authorization": api.headers["Authorization"]}
    with httpx.Client(base_url=realtime_http(stack), headers=auth, timeout=30) as waiting:
        started = time.monotonic()
        response = waiting.post(
            "/v1/lifecycles",
            json={"model": "echo/x", "prompt": "wait for me", "params": {"latency_ms": 500}},
            headers={"Prefer": "wait=20"},
        )
        assert response.status_code == 200, response.text
        assert response.headers["preference-applied"] == "wait=20"
        body = response.json()
        assert body["status"] == "completed" and body["result"] == "wait for me"
        assert time.monotonic() - started < 10

        # Not over in time: the usual answer, after the wait.
        slow = create(api, {"model": "echo/x", "prompt": "slow", "params": {"latency_ms": 4000}})
        started = time.monotonic()
        response = waiting.get(f"/v1/lifecycles/{slow['id']}", headers={"Prefer": "wait=1"})
        assert response.status_code == 200 and response.json()["status"] in ("pending", "generating")
        assert response.headers["preference-applied"] == "wait=1"
        assert 0.9 < time.monotonic() - started < 5
        # Waited for again, it ends.
        response = waiting.get(f"/v1/lifecycles/{slow['id']}", headers={"Prefer": "wait=30"})
        assert response.status_code == 200 and response.json()["status"] == "completed"

        # Without the preference, nothing unusual; past 60 s, it is 60; a bad request is refused at once.
        assert "preference-applied" not in waiting.get(f"/v1/lifecycles/{slow['id']}").headers
        capped = waiting.get(f"/v1/lifecycles/{slow['id']}", headers={"Prefer": "wait=600"})
        assert capped.headers["preference-applied"] == "wait=60"
        invalid = waiting.post("/v1/lifecycles", json={"model": "echo/x"}, headers={"Prefer": "wait=5"})
        assert invalid.status_code == 400 and "error" in invalid.json()


def test_a_stream_ends_when_its_token_expires_saying_so(api, stack):
    lifecycle = create(api, {"model": "echo/x", "prompt": "slow", "params": {"latency_ms": 20000}})
    token = token_expiring_in(3, project_id=str(api.project.id), lifecycle_id=lifecycle["id"])

    started = time.monotonic()
    response, events = read_events(f"{realtime_http(stack)}/v1/lifecycles/{lifecycle['id']}/events?token={token}")
    assert response.status_code == 200
    assert 2 <= time.monotonic() - started <= 10
    assert events[0]["data"]["type"] == "snapshot"
    assert events[-1]["data"] == {
        "type": "error",
        "error": {"code": "token_expired", "message": "The token has expired; reconnect with a new one."},
    }


def test_any_origin_may_read_a_stream_it_holds_a_token_for(api, stack):
    lifecycle = create(api, {"model": "echo/x", "prompt": "cors"})
    url = f"{realtime_http(stack)}/v1/lifecycles/{lifecycle['id']}/events"
    preflight = httpx.options(
        url,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, last-event-id",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert {"authorization", "last-event-id"} <= {
        h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")
    }
    refused = httpx.get(url, headers={"Origin": "https://app.example"})  # no token: refused, readably
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"


def test_revoking_the_key_ends_its_streams_and_refuses_new_ones(api, stack):
    key, raw_key = api_key_create(project=api.project, name="frontend issuer")
    with api_client(stack, raw_key) as issuer:
        lifecycle = create(issuer, {"model": "echo/x", "prompt": "slow", "params": {"latency_ms": 20000}})
    url = f"{realtime_http(stack)}/v1/lifecycles/{lifecycle['id']}/events?token={lifecycle['ws_token']}"
    threading.Timer(1.0, api_key_revoke, kwargs={"key": key}).start()

    started = time.monotonic()
    response, events = read_events(url)
    assert response.status_code == 200
    assert time.monotonic() - started < settings.REALTIME_RESYNC_S + 6
    assert events[-1]["data"]["error"]["code"] == "token_revoked"
    again = httpx.get(url, timeout=10)
    assert again.status_code == 401 and again.json()["error"]["code"] == "unauthorized"
