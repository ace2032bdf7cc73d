"""Streamed model output reaches the socket as coalesced generation.delta messages, before the result."""

from __future__ import annotations

import uuid

import pytest

from tests.lifecycle.helpers import create, scripted
from tests.realtime.helpers import collect, ws_url

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def deltas(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["type"] == "delta"]


def test_a_streaming_model_sends_coalesced_deltas_then_the_final_result(api, stack):
    words = " ".join(f"w{i}" for i in range(60))  # 60 tokens over 1.5 s: ~40 per 100 ms window is too many
    lifecycle = create(api, {"model": "echo/x", "prompt": words, "params": {"latency_ms": 1500, "stream": True}})

    messages, _ = collect(ws_url(stack, lifecycle["id"], lifecycle["ws_token"]))

    streamed = deltas(messages)
    assert "".join(d["text"] for d in streamed) == words
    assert [d["offset"] for d in streamed] == [sum(len(d["text"]) for d in streamed[:i]) for i in range(len(streamed))]
    assert 2 <= len(streamed) < 60  # streamed in pieces, but coalesced
    assert all(d["event"] == "generation.delta" for d in streamed)
    final = messages[-1]
    assert final["event"] == "lifecycle.completed"
    assert final["result"] == words
    assert messages.index(streamed[-1]) < messages.index(final)


def test_openai_streaming_is_parsed_from_server_sent_events(api, stack):
    reply = "streamed from an OpenAI-compatible server"
    prompt = scripted(uuid.uuid4().hex, {"gpt-stream": ["ok"]}, reply=reply)
    lifecycle = create(api, {"model": "openai/gpt-stream", "prompt": prompt, "params": {"stream": True}})

    messages, _ = collect(ws_url(stack, lifecycle["id"], lifecycle["ws_token"]))

    assert "".join(d["text"] for d in deltas(messages)) == reply
    assert messages[-1]["result"] == reply
    usage_event = next(m for m in messages if m.get("event") == "generation.attempt")
    assert usage_event["data"]["usage"] == {"input_tokens": 7, "output_tokens": len(reply.split())}


def test_without_stream_no_deltas_are_sent(api, stack):
    lifecycle = create(api, {"model": "echo/x", "prompt": "quiet please", "params": {"latency_ms": 300}})

    messages, _ = collect(ws_url(stack, lifecycle["id"], lifecycle["ws_token"]))

    assert deltas(messages) == []
    assert messages[-1]["result"] == "quiet please"
