"""Fuzzing the parsers that take input from outside: the callback (token and body, in process and over
HTTP) and the WebSocket messages a browser sends. Whatever arrives, the answer is a clear refusal and
nothing changes; nothing crashes."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime import tokens
from tests.lifecycle.helpers import create, timeline, wait_status
from tests.realtime.helpers import ws_url
from tests.webhooks.helpers import endpoint, received
from webhooks.callbacks import CallbackRejected, token_opens, validate_body

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
# Bodies shaped like callbacks, so the fuzzer reaches deep into the schema rather than stopping at the top.
callback_like = st.dictionaries(
    st.sampled_from(["data", "error", "extra"]),
    json_values
    | st.fixed_dictionaries(
        {},
        optional={"code": json_values | st.text(max_size=120), "message": json_values, "details": json_values},
    ),
    max_size=3,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(body=json_values | callback_like)
def test_the_callback_schema_accepts_or_refuses_any_json_and_nothing_else_happens(body):
    try:
        validate_body(body)
    except CallbackRejected as exc:
        assert str(exc)
        return
    # Whatever passed is exactly one of the two documented shapes.
    assert isinstance(body, dict)
    assert set(body) in ({"data"}, {"error"})
    if "error" in body:
        assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)


@FUZZ
@given(token=st.text(max_size=300), lifecycle_id=st.uuids().map(str))
def test_no_token_string_opens_a_callback_or_a_socket(token, lifecycle_id):
    assert token_opens(token, lifecycle_id) is False
    assert tokens.verify(token) is None


@pytest.fixture
def awaiting_callback(api, customer_backend):
    """A lifecycle whose webhook was delivered and which now waits for the backend's callback."""
    _, scenario = endpoint(api, customer_backend, "silent")
    lifecycle = create(api, {"model": "echo/x", "prompt": "fuzz me"})
    wait_status(api, lifecycle["id"], statuses=("awaiting_callback",))
    (webhook,) = received(customer_backend, scenario)
    return lifecycle["id"], webhook["payload"]["data"]["callback"]


def test_malformed_callbacks_over_http_are_4xx_json_and_change_nothing(api, awaiting_callback):
    lifecycle_id, callback = awaiting_callback
    url, token = callback["url"], callback["token"]
    statuses: list[int] = []

    @FUZZ
    @given(
        body=st.one_of(
            st.binary(max_size=200),
            (json_values | callback_like).filter(_refused_by_schema).map(lambda v: json.dumps(v).encode()),
        ),
        content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]),
    )
    def post(body, content_type):
        response = httpx.post(
            url, content=body, headers={"Authorization": f"Bearer {token}", "Content-Type": content_type}
        )
        statuses.append(response.status_code)
        assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
        assert response.json()["error"]["code"]

    post()
    # A token for this lifecycle does not open another one, whatever the body.
    other = create(api, {"model": "echo/x", "prompt": "another"})
    wrong = httpx.post(
        url.replace(lifecycle_id, other["id"]), json={"data": 1}, headers={"Authorization": f"Bearer {token}"}
    )
    assert wrong.status_code == 401

    after = api.get(f"/v1/lifecycles/{lifecycle_id}").json()
    assert after["status"] == "awaiting_callback", after
    assert "callback.received" not in [e["event"] for e in timeline(api, lifecycle_id)]
    assert len(statuses) >= 50


def test_any_websocket_message_gets_an_answer_and_the_socket_lives_on(api, stack):
    lifecycle = create(api, {"model": "echo/x", "prompt": "listen", "params": {"latency_ms": 60000}})
    url = ws_url(stack, lifecycle["id"], lifecycle["ws_token"])
    frames = st.lists(
        st.one_of(
            st.text(max_size=200),
            st.binary(max_size=200),
            json_values.map(json.dumps),
            st.just("[" * 5000),  # deep nesting
            st.just('{"type": "ping"'),  # truncated
        ),
        min_size=1,
        max_size=8,
    )

    async def scenario(sent: list) -> None:
        async with websockets.connect(url, open_timeout=10) as socket:
            assert json.loads(await socket.recv())["type"] == "snapshot"
            for frame in sent:
                await socket.send(frame)
            await socket.send(json.dumps({"type": "ping"}))
            async with asyncio.timeout(10):
                while True:
                    message = json.loads(await socket.recv())
                    if message["type"] == "pong":
                        break
                    assert message["type"] in ("error", "event"), message

    @settings(max_examples=40, deadline=None)
    @given(sent=frames)
    def fuzz(sent):
        asyncio.run(scenario(sent))

    fuzz()


def _refused_by_schema(value) -> bool:
    try:
        validate_body(value)
    except CallbackRejected:
        return True
    return False
