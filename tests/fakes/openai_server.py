"""A fake provider server (OpenAI Chat Completions at ``/v1/chat/completions``, Anthropic Messages at
``/v1/messages``), run as its own process on loopback.

Each request's last user message is JSON naming a scenario and, per model, the answers to give in turn:
``{"scenario": "s1", "steps": {"m1": ["429:1", "ok"]}, "reply": "hi"}``. Steps: ``ok`` (answer ``reply``),
``429:<retry-after>``, ``500``, ``400``, ``hang:<seconds>`` (answer nothing for that long), ``drop`` (close the
connection without answering), ``trickle:<seconds>``
(stream the reply's words spread over that long: a model slower than any lease, yet never silent for
long enough to time out), ``mirror`` (reply with the request's own fields but ``messages``, as JSON: what
the provider was asked), ``garbage`` (not JSON). The last step repeats. ``GET /calls`` reports how many
calls each scenario/model had.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

from tests.fakes.http import JsonHandler, serve

calls: Counter[str] = Counter()
lock = threading.Lock()


class Handler(JsonHandler):
    def _stream(self, model: str, reply: str, gap_s: float = 0.02) -> None:
        """Server-sent events, a word per chunk, then usage and [DONE], as the Chat Completions API streams."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        words = reply.split(" ")
        for i, word in enumerate(words):
            piece = word if i == len(words) - 1 else word + " "
            chunk = {
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": {"content": piece}}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(gap_s)
        usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(words)}}
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        self.close_connection = True

    def _stream_messages(self, model: str, reply: str, gap_s: float = 0.02) -> None:
        """The Messages API's server-sent events: message_start, a text block's deltas, message_delta, stop."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        words = reply.split(" ")

        def event(kind: str, data: dict) -> None:
            self.wfile.write(f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode())
            self.wfile.flush()

        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": []}
        event("message_start", {"message": message | {"usage": {"input_tokens": 11, "output_tokens": 1}}})
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        event("ping", {})
        for i, word in enumerate(words):
            piece = word if i == len(words) - 1 else word + " "
            event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
            time.sleep(gap_s)
        event("content_block_stop", {"index": 0})
        event("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": len(words)}})
        event("message_stop", {})
        self.close_connection = True

    def do_GET(self) -> None:
        with lock:
            self._send(200, json.dumps(dict(calls)).encode())

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        model = request["model"]
        user = next(m for m in reversed(request["messages"]) if m["role"] == "user")
        script = json.loads(user["content"])
        key = f"{script['scenario']}/{model}"
        with lock:
            n = calls[key]
            calls[key] += 1
        steps = script["steps"].get(model, ["ok"])
        step = steps[min(n, len(steps) - 1)]
        kind, _, arg = step.partition(":")
        if kind == "hang":
            time.sleep(float(arg))
            kind = "ok"
        if kind == "drop":
            self.close_connection = True
            return
        if kind == "mirror":
            script["reply"] = json.dumps({k: v for k, v in request.items() if k != "messages"}, sort_keys=True)
            kind = "ok"
        if kind == "ok" and self.path.endswith("/messages") and request.get("stream"):
            self._stream_messages(model, script.get("reply", "hi"))
        elif kind == "ok" and self.path.endswith("/messages"):
            assert self.headers.get("x-api-key") and self.headers.get("anthropic-version")
            body = {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": script.get("reply", "hi")}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 11, "output_tokens": 5},
                "system_seen": request.get("system", ""),
            }
            self._send(200, json.dumps(body).encode())
        elif kind == "trickle":
            words = script.get("reply", "hi").split(" ")
            self._stream(model, script.get("reply", "hi"), gap_s=float(arg) / len(words))
        elif kind == "ok" and request.get("stream"):
            self._stream(model, script.get("reply", "hi"))
        elif kind == "ok":
            body = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": script.get("reply", "hi")}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
            }
            self._send(200, json.dumps(body).encode())
        elif kind == "429":
            self._send(429, b'{"error": {"message": "rate limited"}}', {"Retry-After": arg or "1"})
        elif kind == "garbage":
            self._send(200, b"<html>not json")
        else:
            self._send(int(kind), b'{"error": {"message": "scripted failure"}}')


if __name__ == "__main__":
    serve(Handler)
