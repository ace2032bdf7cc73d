"""One origin on the embedded default: ``make dev``'s proxy (orchestrator/front.py) serves HTTP and
WebSockets on one port, and the links the API hands out work with ``PUBLIC_BASE_URL`` set."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from orchestrator.embedded import PROJECT_DIR, free_port, port_open
from tests.conftest import api_client
from tests.lifecycle.helpers import create, wait_status
from tests.processes import poll_until
from tests.realtime.helpers import collect

pytestmark = [pytest.mark.stack]


def start_front(*, web_port: int | str, realtime_port: int | str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "WEB_PORT": str(web_port), "REALTIME_PORT": str(realtime_port)}
    front = subprocess.Popen([sys.executable, "-m", "orchestrator.front"], cwd=PROJECT_DIR, env=env)
    poll_until(lambda: port_open(port), bool, timeout=15, what="the front listening")
    return front, port


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(data)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


@pytest.mark.django_db(transaction=True)
def test_http_and_websockets_share_the_fronts_port(stack, project_key):
    front, port = start_front(web_port=stack.env["PORT"], realtime_port=stack.env["REALTIME_PORT"])
    try:
        _, api_key = project_key
        with api_client(stack, api_key) as api:
            api.base_url = f"http://127.0.0.1:{port}"
            # Many requests on one keep-alive connection, each routed with the connection.
            lifecycles = [create(api, {"model": "echo/x", "prompt": f"through the front {n}"}) for n in range(5)]
            messages, close_code = collect(
                f"ws://127.0.0.1:{port}/ws/lifecycles/{lifecycles[0]['id']}?token={lifecycles[0]['ws_token']}"
            )
            assert messages[0]["type"] == "snapshot"
            assert messages[-1]["event"] == "lifecycle.completed" and messages[-1]["result"] == "through the front 0"
            assert close_code == 1000
            for lifecycle in lifecycles:
                assert wait_status(api, lifecycle["id"])["status"] == "completed"
            # A body bigger than a socket buffer passes whole, and the answer with it.
            big = api.post("/v1/lifecycles", json={"model": "echo/x", "prompt": "x" * 300_000})
            assert big.status_code in (202, 400, 413), big.text
            assert big.headers["content-type"].startswith("application/json")

        answer = raw_exchange(port, b"HELLO\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "bad_request"
    finally:
        stop(front)


@pytest.mark.django_db(transaction=True)
def test_each_request_on_a_keep_alive_connection_goes_where_it_is_served(stack, project_key):
    """A waiting request and an event stream go to the realtime process, the rest to the web process, on one
    connection (a browser's EventSource may reuse the connection of an earlier fetch)."""
    front, port = start_front(web_port=stack.env["PORT"], realtime_port=stack.env["REALTIME_PORT"])
    try:
        _, api_key = project_key
        with api_client(stack, api_key) as api:
            lifecycle = create(api, {"model": "echo/x", "prompt": "one connection"})
        auth = {"Authorization": f"Bearer {api_key}"}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/v1/lifecycles/{lifecycle['id']}", headers=auth | {"Prefer": "wait=10"})
        waited = conn.getresponse()
        assert waited.status == 200 and json.loads(waited.read())["status"] == "completed"
        assert waited.getheader("Preference-Applied") == "wait=10"  # only the realtime process applies it
        socket_used = conn.sock

        conn.request("GET", f"/v1/lifecycles/{lifecycle['id']}/events?token={lifecycle['ws_token']}")
        stream = conn.getresponse()
        assert stream.status == 200 and stream.getheader("Content-Type").startswith("text/event-stream")
        assert b'"lifecycle.completed"' in stream.read()
        assert conn.sock is socket_used

        conn.request("GET", f"/v1/lifecycles/{lifecycle['id']}", headers=auth | {"Prefer": "respond-async"})
        plain = conn.getresponse()
        assert plain.status == 200 and plain.getheader("Preference-Applied") is None  # the web process
        assert json.loads(plain.read())["id"] == lifecycle["id"]
        conn.close()
    finally:
        stop(front)


def test_an_upstream_that_is_not_there_gets_a_502_in_json():
    front, port = start_front(web_port=free_port(), realtime_port=free_port())
    try:
        answer = raw_exchange(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 502 ")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "unavailable"
    finally:
        stop(front)


def test_make_dev_with_public_base_url_set_hands_out_socket_links_that_work(tmp_path):
    """``make dev`` as a user runs it, with its own embedded servers, and PUBLIC_BASE_URL set as a user sets
    it so callback links are right: ``links.websocket`` is on that origin and the socket gets its result."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env |= {
        "STATE_DIR": str(tmp_path / "state"),
        "EMBEDDED_PG_PORT": str(free_port()),
        "EMBEDDED_REDIS_PORT": str(free_port()),
        "EMBEDDED_KAFKA_PORT": str(free_port()),
        "PORT": str(port),
        "REALTIME_PORT": str(free_port()),
        "WEB_PORT": str(free_port()),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
    }
    env.pop("PUBLIC_WS_URL", None)
    log = open(tmp_path / "make-dev.log", "wb")  # noqa: SIM115 - closed below
    runner = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.run"], cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        output = lambda: (tmp_path / "make-dev.log").read_text(errors="replace")  # noqa: E731
        poll_until(output, lambda text: "is up" in text or runner.poll() is not None, timeout=240, what="make dev up")
        assert runner.poll() is None, output()
        demo = json.loads((tmp_path / "state" / "demo-project.json").read_text())
        key = {"Authorization": f"Bearer {demo['api_key']}"}
        with httpx.Client(base_url=env["PUBLIC_BASE_URL"], headers=key) as api:
            lifecycle = create(api, {"model": "echo/x", "prompt": "one origin"})
            assert lifecycle["links"]["websocket"].startswith(f"ws://127.0.0.1:{port}/ws/lifecycles/")
            messages, close_code = collect(f"{lifecycle['links']['websocket']}?token={lifecycle['ws_token']}")
        assert messages[-1]["event"] == "lifecycle.completed" and messages[-1]["result"] == "one origin"
        assert close_code == 1000
        assert f"Sockets  ws://127.0.0.1:{port}/ws/lifecycles/" in output()
    finally:
        runner.send_signal(signal.SIGTERM)
        try:
            runner.wait(timeout=60)
        except subprocess.TimeoutExpired:
            runner.kill()
        log.close()
    deadline = time.monotonic() + 10
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not port_open(port)  # the front stopped with the rest
