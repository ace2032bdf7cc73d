"""docker/nginx.conf, the production origin, run by a real nginx in front of the test stack: each request
reaches the process that serves it (a socket, an event stream and a request that waits the realtime
process; the rest the web process)."""

from __future__ import annotations

import json
import shutil
import subprocess

import httpx
import openai
import pytest

from orchestrator.embedded import PROJECT_DIR, free_port, port_open
from tests.lifecycle.helpers import create
from tests.processes import poll_until
from tests.realtime.helpers import collect

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")


@pytest.fixture
def nginx(stack, tmp_path):
    """nginx with the compose file's config, the upstreams pointed at the stack's ports."""
    if NGINX is None:
        pytest.skip("nginx is not installed (.ci/run installs Debian's nginx-light)")
    port = free_port()
    conf = (PROJECT_DIR / "docker" / "nginx.conf").read_text()
    conf = conf.replace("server web:8000;", f"server 127.0.0.1:{stack.env['PORT']};")
    conf = conf.replace("server realtime:8001;", f"server 127.0.0.1:{stack.env['REALTIME_PORT']};")
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    (tmp_path / "site.conf").write_text(conf)
    temp = {name: tmp_path / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    (tmp_path / "nginx.conf").write_text(
        f"""
daemon off;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {tmp_path}/site.conf;
}}
"""
    )
    process = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")])
    try:
        poll_until(lambda: port_open(port), bool, timeout=15, what="nginx listening")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_nginx_routes_each_request_to_the_process_that_serves_it(nginx, project_key):
    _, api_key = project_key
    auth = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=f"http://{nginx}", headers=auth, timeout=30) as api:
        lifecycle = create(api, {"model": "echo/x", "prompt": "through nginx", "params": {"latency_ms": 300}})

        # A socket and an event stream, to the realtime process.
        messages, close_code = collect(f"ws://{nginx}/ws/lifecycles/{lifecycle['id']}?token={lifecycle['ws_token']}")
        assert messages[-1]["event"] == "lifecycle.completed" and close_code == 1000
        events = f"http://{nginx}/v1/lifecycles/{lifecycle['id']}/events?token={lifecycle['ws_token']}"
        with httpx.stream("GET", events) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert '"lifecycle.completed"' in stream.read().decode()

        # Prefer: wait to the realtime process, which applies it; the same request without it to the web one.
        waited = api.post(
            "/v1/lifecycles",
            json={"model": "echo/x", "prompt": "waited", "params": {"latency_ms": 300}},
            headers={"Prefer": "wait=20"},
        )
        assert waited.status_code == 200 and waited.headers["preference-applied"] == "wait=20"
        assert waited.json()["result"] == "waited"
        plain = api.get(f"/v1/lifecycles/{lifecycle['id']}")
        assert plain.status_code == 200 and "preference-applied" not in plain.headers
        assert json.loads(plain.text)["status"] == "completed"

    # The OpenAI SDK pointed at the origin: models from the web process, completions (streamed or not) from
    # the realtime process.
    with openai.OpenAI(base_url=f"http://{nginx}/v1", api_key=api_key, timeout=30) as sdk:
        assert "echo/echo" in [model.id for model in sdk.models.list()]
        answer = sdk.chat.completions.create(model="echo/x", messages=[{"role": "user", "content": "via nginx"}])
        assert answer.choices[0].message.content == "via nginx"
        stream = sdk.chat.completions.create(
            model="echo/x",
            messages=[{"role": "user", "content": "streamed via nginx"}],
            stream=True,
            extra_body={"params": {"latency_ms": 300}},
        )
        pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
        assert "".join(pieces) == "streamed via nginx" and len(pieces) == 3
