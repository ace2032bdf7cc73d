"""The realtime socket through daphne, with real WebSocket clients: catch-up, hand-over, scoping."""

from __future__ import annotations

import asyncio
import json
import time
from unittest import mock

import pytest
import redis
import websockets
from django.conf import settings

from lifecycle.services import api_key_create, api_key_revoke
from realtime import limits, tokens
from tests.conftest import api_client, make_project
from tests.embedded_servers import embedded_stack
from tests.lifecycle.helpers import create, timeline, wait_status
from tests.processes import poll_until
from tests.realtime.helpers import collect, refused, token_expiring_in, ws_url

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def seqs(messages: list[dict]) -> list[int]:
    return [m["seq"] for m in messages if m["type"] == "event"]


def test_a_live_subscriber_gets_a_snapshot_then_every_event_then_the_result(api, stack):
    lifecycle = create(api, {"model": "echo/x", "prompt": "stream me", "params": {"latency_ms": 1000}})

    messages, close_code = collect(f"{lifecycle['links']['websocket']}?token={lifecycle['ws_token']}")

    assert messages[0]["type"] == "snapshot"
    assert messages[0]["lifecycle"]["id"] == lifecycle["id"]
    final = messages[-1]
    assert final["event"] == "lifecycle.completed"
    assert final["result"] == "stream me"
    assert close_code == 1000
    assert seqs(messages) == [e["seq"] for e in timeline(api, lifecycle["id"])]


def test_a_late_subscriber_catches_up_from_the_database(api, stack):
    lifecycle = create(api, {"model": "echo/x", "prompt": "already done"})
    wait_status(api, lifecycle["id"])

    messages, close_code = collect(ws_url(stack, lifecycle["id"], lifecycle["ws_token"]))

    assert messages[0]["lifecycle"]["status"] == "completed"
    assert messages[0]["lifecycle"]["result"] == "already done"
    assert seqs(messages) == [1, 2, 3, 4]
    assert messages[-1]["result"] == "already done"
    assert close_code == 1000


def test_reconnecting_mid_stream_with_since_loses_and_duplicates_nothing(api, stack, customer_backend):
    from tests.webhooks.helpers import endpoint

    endpoint(api, customer_backend, "500,data")  # a lifecycle with many steps, over a few seconds
    lifecycle = create(api, {"model": "echo/x", "prompt": "bumpy", "params": {"latency_ms": 500}})
    url = ws_url(stack, lifecycle["id"], lifecycle["ws_token"])

    first, _ = collect(url, limit=3)  # the snapshot and two events, then the client drops
    resumed, close_code = collect(ws_url(stack, lifecycle["id"], lifecycle["ws_token"], since=seqs(first)[-1]))

    everything = seqs(first) + seqs(resumed)
    assert everything == [e["seq"] for e in timeline(api, lifecycle["id"])]
    assert len(everything) == len(set(everything)) >= 8
    assert resumed[-1]["event"] == "lifecycle.completed"
    assert resumed[-1]["result"]["enriched"] == "BUMPY"
    assert close_code == 1000


INTERNAL = {"endpoint_id", "delivery_id", "webhook_id", "response_excerpt", "status_code", "http_status", "details"}


def keys_in(value) -> set[str]:
    """Every key anywhere in a JSON value."""
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in keys_in(item)}
    if isinstance(value, list):
        return {key for item in value for key in keys_in(item)}
    return set()


def test_a_browser_sees_statuses_and_outcomes_never_what_is_meant_for_operators(api, stack, customer_backend):
    """The timeline keeps webhook excerpts, endpoint ids and HTTP statuses for operators; neither the live
    stream nor the catch-up from the database shows them to the socket."""
    from tests.webhooks.helpers import endpoint

    endpoint(api, customer_backend, "500,data")  # one failed attempt (with a response excerpt), then delivered
    lifecycle = create(api, {"model": "echo/x", "prompt": "for the user", "params": {"latency_ms": 300}})
    live, _ = collect(ws_url(stack, lifecycle["id"], lifecycle["ws_token"]))
    late, _ = collect(ws_url(stack, lifecycle["id"], lifecycle["ws_token"]))  # after the end: from the database

    events = timeline(api, lifecycle["id"])
    assert {"webhook.attempt", "callback.received"} <= {e["event"] for e in events}
    assert INTERNAL & keys_in(events)  # the operators' timeline has them...
    for messages in (live, late):
        assert messages[-1]["event"] == "lifecycle.completed"
        assert not INTERNAL & keys_in(messages), messages  # ...the browser does not
        attempts = [m for m in messages if m.get("event") == "webhook.attempt"]
        assert [{k: a["data"][k] for k in ("attempt", "outcome")} for a in attempts] == [
            {"attempt": 1, "outcome": "failed"},
            {"attempt": 2, "outcome": "succeeded"},
        ]


def test_a_failed_lifecycle_ends_with_a_friendly_error(api, stack, customer_backend):
    from tests.webhooks.helpers import endpoint

    endpoint(api, customer_backend, "error")
    lifecycle = create(api, {"model": "echo/x", "prompt": "no stock"})

    messages, _ = collect(ws_url(stack, lifecycle["id"], lifecycle["ws_token"]))

    assert messages[-1]["event"] == "lifecycle.failed"
    assert messages[-1]["error"] == {
        "code": "backend_rejected",
        "message": "That item is no longer available.",
        "step": "callback",
    }


def test_tokens_for_another_tenant_another_lifecycle_or_expired_are_refused(api, stack):
    mine = create(api, {"model": "echo/x", "prompt": "mine"})
    _, other_key = make_project("other tenant")
    with api_client(stack, other_key) as other:
        theirs = create(other, {"model": "echo/x", "prompt": "theirs"})
    expired_at = time.time() - 3600
    with mock.patch("django.core.signing.time.time", return_value=expired_at):
        expired = tokens.mint(tokens.RealtimeScope(project_id=str(api.project.id), lifecycle_id=mine["id"]))

    assert refused(ws_url(stack, mine["id"], theirs["ws_token"])) == 403
    assert refused(ws_url(stack, theirs["id"], mine["ws_token"])) == 403
    assert refused(ws_url(stack, mine["id"], expired)) == 403
    assert refused(ws_url(stack, mine["id"], "garbage")) == 403
    assert refused(ws_url(stack, "not-a-uuid", mine["ws_token"])) == 403


def test_a_socket_closes_when_its_token_expires(api, stack):
    lifecycle = create(api, {"model": "echo/x", "prompt": "slow", "params": {"latency_ms": 20000}})
    token = token_expiring_in(3, project_id=str(api.project.id), lifecycle_id=lifecycle["id"])

    started = time.monotonic()
    messages, close_code = collect(ws_url(stack, lifecycle["id"], token), timeout=15)

    assert close_code == 4401
    assert 2 <= time.monotonic() - started <= 10
    assert messages[0]["type"] == "snapshot"
    assert not [m for m in messages if m.get("event") == "lifecycle.completed"]


def test_a_subscriber_token_opens_that_subscribers_lifecycles_only(api, stack):
    alice = create(api, {"model": "echo/x", "prompt": "for alice", "subscriber": {"user_id": "alice"}})
    bob = create(api, {"model": "echo/x", "prompt": "for bob", "subscriber": {"user_id": "bob"}})
    response = api.post("/v1/realtime/tokens", json={"user_id": "alice"})
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    assert response.json()["url"] == f"{stack.ws_url}/ws/subscriber"  # the realtime process, not the API's

    messages, _ = collect(ws_url(stack, alice["id"], token))

    assert messages[-1]["result"] == "for alice"
    assert refused(ws_url(stack, bob["id"], token)) == 403


def test_a_result_too_big_for_the_event_message_still_reaches_the_socket_whole(api, stack):
    prompt = "x" * (20 * 1024)  # the echo model's result: over the 16 KiB an event message carries
    lifecycle = create(api, {"model": "echo/x", "prompt": prompt, "params": {"latency_ms": 800}})

    messages, close_code = collect(ws_url(stack, lifecycle["id"], lifecycle["ws_token"]))

    assert messages[-1]["event"] == "lifecycle.completed"
    assert messages[-1]["result"] == prompt
    assert close_code == 1000


def test_a_broadcast_reaches_only_the_sockets_of_its_lifecycle(api, stack):
    one = create(api, {"model": "echo/x", "prompt": "one", "params": {"latency_ms": 800}})
    two = create(api, {"model": "echo/x", "prompt": "two", "params": {"latency_ms": 800}})

    messages, _ = collect(ws_url(stack, one["id"], one["ws_token"]))

    assert {m["lifecycle_id"] for m in messages if m["type"] == "event"} == {one["id"]}
    assert messages[-1]["result"] == "one"
    assert two["id"] != one["id"]


def test_the_token_endpoint_refuses_another_projects_lifecycle_and_bad_bodies(api, stack):
    _, other_key = make_project("other tenant")
    with api_client(stack, other_key) as other:
        theirs = create(other, {"model": "echo/x", "prompt": "theirs"})

    assert api.post("/v1/realtime/tokens", json={"lifecycle_id": theirs["id"]}).status_code == 404
    assert api.post("/v1/realtime/tokens", json={}).status_code == 400
    assert api.post("/v1/realtime/tokens", json={"lifecycle_id": theirs["id"], "user_id": "x"}).status_code == 400


def redis_exists(key: str) -> int:
    return redis.Redis.from_url(settings.REDIS_URL).exists(key)


def test_a_token_holds_a_limited_number_of_sockets(api, stack):
    lifecycle = create(api, {"model": "echo/x", "prompt": "popular", "params": {"latency_ms": 3000}})
    url = ws_url(stack, lifecycle["id"], lifecycle["ws_token"])

    async def scenario():
        sockets = [await websockets.connect(url) for _ in range(settings.REALTIME_MAX_CONNECTIONS_PER_TOKEN)]
        one_too_many = await websockets.connect(url)
        try:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(one_too_many.recv(), 5)
            code = closed.value.rcvd.code
        finally:
            await sockets.pop().close()
        # A freed place can be taken again.
        replacement = await websockets.connect(url)
        first = json.loads(await asyncio.wait_for(replacement.recv(), 5))
        for socket in [*sockets, replacement]:
            await socket.close()
        return code, first

    code, first = asyncio.run(scenario())

    assert code == 4429
    assert first["type"] == "snapshot"
    # The last socket of the token took its count with it: nothing of it is left in Redis.
    key = limits.count_key(lifecycle["ws_token"])
    assert poll_until(lambda: redis_exists(key), lambda exists: not exists, timeout=10, what="count gone") == 0


def test_a_subscriber_stream_carries_that_subscribers_lifecycles_and_no_one_elses(api, stack):
    minted = api.post("/v1/realtime/tokens", json={"user_id": "carol"}).json()
    url = f"{minted['url']}?token={minted['token']}"

    async def scenario():
        async with websockets.connect(url) as socket:
            await asyncio.sleep(0.3)  # joined before anything happens
            carols = await asyncio.to_thread(
                create, api, {"model": "echo/x", "prompt": "c", "subscriber": {"user_id": "carol"}}
            )
            await asyncio.to_thread(create, api, {"model": "echo/x", "prompt": "d", "subscriber": {"user_id": "dave"}})
            await asyncio.to_thread(create, api, {"model": "echo/x", "prompt": "nobody"})
            seen = []
            async with asyncio.timeout(20):
                while not seen or seen[-1]["event"] != "lifecycle.completed":
                    seen.append(json.loads(await socket.recv()))
            await asyncio.sleep(1)  # anything misrouted would have arrived by now
            try:
                extra = json.loads(await asyncio.wait_for(socket.recv(), 0.5))
            except TimeoutError:
                extra = None
            return carols, seen, extra

    carols, seen, extra = asyncio.run(scenario())

    assert {m["lifecycle_id"] for m in seen} == {carols["id"]}
    assert extra is None or extra["lifecycle_id"] == carols["id"]
    assert refused(f"{stack.ws_url}/ws/subscriber?token={carols['ws_token']}") == 403


def test_an_open_socket_still_gets_every_event_after_redis_restarts_empty(api, stack):
    """Redis holds the channel layer's groups; restarted, it has forgotten them. The socket re-joins its
    group and catches up from the database within REALTIME_RESYNC_S (2 s in the suite)."""
    lifecycle = create(api, {"model": "echo/x", "prompt": "through a restart", "params": {"latency_ms": 4000}})
    redis = embedded_stack().server("redis")

    def restart_redis() -> None:
        redis.stop()
        redis.start()

    async def scenario() -> tuple[list[dict], int | None]:
        async with websockets.connect(ws_url(stack, lifecycle["id"], lifecycle["ws_token"])) as socket:
            messages = [json.loads(await socket.recv())]
            await asyncio.to_thread(restart_redis)
            try:
                async with asyncio.timeout(30):
                    async for raw in socket:
                        messages.append(json.loads(raw))
            except websockets.ConnectionClosed:
                pass
            return messages, socket.close_code

    messages, close_code = asyncio.run(scenario())

    assert messages[-1]["event"] == "lifecycle.completed", messages
    assert messages[-1]["result"] == "through a restart"
    assert close_code == 1000
    assert seqs(messages) == [e["seq"] for e in timeline(api, lifecycle["id"])]


def test_revoking_the_key_closes_what_its_tokens_opened_and_refuses_them(api, stack):
    key, raw_key = api_key_create(project=api.project, name="frontend issuer")
    with api_client(stack, raw_key) as issuer:
        lifecycle = create(issuer, {"model": "echo/x", "prompt": "slow", "params": {"latency_ms": 20000}})
    url = ws_url(stack, lifecycle["id"], lifecycle["ws_token"])

    async def revoked_while_open():
        async with websockets.connect(url, open_timeout=10) as socket:
            assert json.loads(await socket.recv())["type"] == "snapshot"
            await asyncio.to_thread(api_key_revoke, key=key)
            started = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(15):
                    while True:
                        await socket.recv()
            return socket.close_code, time.monotonic() - started

    close_code, took = asyncio.run(revoked_while_open())
    assert close_code == 4403
    assert took < settings.REALTIME_RESYNC_S + 5
    assert refused(url) == 403  # and no socket opens with it again
