"""The browser ES module (realtime/static/realtime/lifecycle-client.js) on its own, in headless Chromium."""

from __future__ import annotations

import pytest

from tests.lifecycle.helpers import create, timeline

pytestmark = [pytest.mark.stack, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RUN_CLIENT = """
async ([url, token, transport = "websocket"]) => {
  const { LifecycleSocket } = await import("/static/realtime/lifecycle-client.js");
  window.seen = { events: [], deltas: "", states: [], final: null };
  const socket = new LifecycleSocket({
    url, token, transport, maxBackoffMs: 500,
    onEvent: (e) => window.seen.events.push(e.seq),
    onDelta: (text) => { window.seen.deltas += text; },
    onConnection: (state) => window.seen.states.push(state),
    onCompleted: (result) => { window.seen.final = { result }; },
    onFailed: (error) => { window.seen.final = { error }; },
  });
  socket.connect();
}
"""


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_the_module_reconnects_after_the_server_drops_and_resumes_without_gaps_or_repeats(
    api, stack, browser_page, transport
):
    page = browser_page
    page.goto(f"{stack.base_url}/demo/")  # any page of the origin, to import the module from
    # Long enough that the kill lands mid-generation even on a loaded machine (asserted below: a lifecycle
    # already over before the kill would test nothing).
    lifecycle = create(api, {"model": "echo/x", "prompt": "resilient", "params": {"latency_ms": 8000}})
    # Over SSE from another origin (the realtime port): the stream allows it, as the socket does.
    url = lifecycle["links"]["events" if transport == "sse" else "websocket"]

    page.evaluate(RUN_CLIENT, [url, lifecycle["ws_token"], transport])
    page.wait_for_function("window.seen.events.length >= 2", timeout=20_000)
    assert page.evaluate("window.seen.final") is None, "the lifecycle ended before the server was killed"
    stack.kill("realtime")  # every socket drops at once
    stack.start("realtime")
    page.wait_for_function("window.seen.final !== null", timeout=30_000)

    seen = page.evaluate("window.seen")
    assert seen["final"] == {"result": "resilient"}
    assert seen["events"] == [e["seq"] for e in timeline(api, lifecycle["id"])]
    assert "reconnecting" in seen["states"]
    assert seen["states"][-1] == "closed"


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_the_module_passes_streamed_output_to_on_delta(api, stack, browser_page, transport):
    page = browser_page
    page.goto(f"{stack.base_url}/demo/")
    prompt = "one two three four five six seven eight"
    lifecycle = create(api, {"model": "echo/x", "prompt": prompt, "params": {"latency_ms": 1000, "stream": True}})
    url = lifecycle["links"]["events" if transport == "sse" else "websocket"]

    page.evaluate(RUN_CLIENT, [url, lifecycle["ws_token"], transport])
    page.wait_for_function("window.seen.final !== null", timeout=20_000)

    seen = page.evaluate("window.seen")
    assert seen["deltas"] == prompt
    assert seen["final"] == {"result": prompt}
