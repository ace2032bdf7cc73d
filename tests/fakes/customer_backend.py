"""A customer backend, run as its own process on loopback: it receives our webhooks, verifies them with the
stock ``standardwebhooks`` library, and calls back the way a real backend would.

Endpoint URLs name a scenario and the answer to each delivery attempt in turn, the last repeating:
``/hooks/<scenario>/<step>,<step>,...``. Steps:

- ``data``   answer 200, then call back with ``{"data": {"enriched": <output upper-cased>}}`` after
  ``WORK_S``, as a backend whose own work takes a moment: by then our side has recorded the delivery, so the
  timeline shows ``awaiting_callback`` before the callback
- ``now``    answer 200 and call back with data at once (the benchmark's backend): the callback may arrive
  before our side has recorded the delivery, and the lifecycle completes straight from ``delivering``
- ``inline`` call back with data *before* answering 200 (the callback races the delivery)
- ``error``  answer 200, then call back with ``{"error": {...}}``
- ``silent`` answer 200 and never call back
- ``500``    answer 500;  ``hang`` answer nothing for 5 s;  ``reset`` drop the connection
- ``drip``   answer 200 with a 100-byte body, sent one byte every 0.2 s
- ``huge``   answer 200 with an 8 MiB body
- ``abort``  answer 410 with ``webhook-delivery: abort-message``
- ``redirect`` answer 302 to the cloud metadata address (which must not be followed)
- ``chaos``  a fault drawn at random for each attempt: 500 (10%), hang (5%), reset (5%), else ``data``

Callbacks are retried, as a real backend would, while our API is unreachable or answers 5xx.

``POST /secrets/<scenario>`` registers the endpoint secret; ``GET /received/<scenario>`` lists what came in.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct
import threading
import time
from collections import defaultdict

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.fakes.http import JsonHandler, serve

secrets: dict[str, list[str]] = {}
received: dict[str, list[dict]] = defaultdict(list)
lock = threading.Lock()
# One pooled client for every callback, as a real backend keeps: a bare httpx.post() builds a client (and
# an SSL context) per call, which cost more CPU than our side of the callback.
client = httpx.Client(timeout=10)
WORK_S = 0.25


def call_back_later(payload: dict, body: dict, traceparent: str | None, delay_s: float) -> None:
    time.sleep(delay_s)
    call_back(payload, body, traceparent)


CALLBACK_RETRY_S = 300


def call_back(payload: dict, body: dict, traceparent: str | None = None) -> None:
    callback = payload["data"]["callback"]
    headers = {"Authorization": f"Bearer {callback['token']}"}
    if traceparent:
        headers["traceparent"] = traceparent  # continue the webhook's trace, as docs/webhooks.md suggests
    # As long as a real backend's queue would keep the job: longer than the fault run's minute-long outages
    # (with 60 s, a callback whose retries began as PostgreSQL went away gave up just before it came back).
    deadline = time.monotonic() + CALLBACK_RETRY_S
    while True:
        try:
            status = client.post(callback["url"], json=body, headers=headers).status_code
        except httpx.HTTPError:
            status = None
        if (status is not None and status < 500) or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def chaos_step() -> str:
    roll = random.random()
    return "500" if roll < 0.10 else "hang" if roll < 0.15 else "reset" if roll < 0.20 else "data"


def callback_body(step: str, payload: dict) -> dict:
    if step == "error":
        return {"error": {"code": "out_of_stock", "message": "That item is no longer available."}}
    output = payload["data"]["output"]
    return {"data": {"enriched": str(output).upper(), "lifecycle_id": payload["data"]["lifecycle_id"]}}


class Handler(JsonHandler):
    def do_GET(self) -> None:
        scenario = self.path.rsplit("/", 1)[-1]
        with lock:
            self._send(200, json.dumps(received[scenario]).encode())

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        parts = self.path.strip("/").split("/")
        if parts[0] == "secrets":
            secrets[parts[1]] = json.loads(raw)["secrets"]
            self._send(200)
            return
        _, scenario, script = parts
        headers = {k.lower(): v for k, v in self.headers.items()}
        verified = []
        for secret in secrets.get(scenario, []):
            try:
                Webhook(secret).verify(raw, headers)
                verified.append(True)
            except WebhookVerificationError:
                verified.append(False)
        payload = json.loads(raw)
        with lock:
            attempt = len(received[scenario])
            received[scenario].append(
                {
                    "webhook_id": headers.get("webhook-id"),
                    "signature": headers.get("webhook-signature"),
                    "traceparent": headers.get("traceparent"),
                    "verified": verified,
                    "payload": payload,
                    "raw": raw.decode(),
                    "headers": {k: v for k, v in headers.items() if k.startswith("webhook-")},
                }
            )
        steps = script.split(",")
        step = steps[min(attempt, len(steps) - 1)]
        if step == "chaos":
            step = chaos_step()
        if step == "500":
            self._send(500, b'{"error": "boom"}')
        elif step == "hang":
            time.sleep(5)
            self._send(200)
        elif step == "reset":
            # RST instead of FIN: linger on with a zero timeout.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif step == "drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
        elif step == "huge":
            self._send(200, b"[" + b"0," * (4 * 1024 * 1024) + b"0]")
        elif step == "redirect":
            self._send(302, b"{}", {"Location": "http://169.254.169.254/latest/meta-data/"})
        elif step == "abort":
            self._send(410, b'{"error": "gone"}', {"webhook-delivery": "abort-message"})
        elif step == "inline":
            call_back(payload, callback_body("data", payload), headers.get("traceparent"))
            self._send(200)
        else:
            self._send(200)
            if step in ("data", "error", "now"):
                body = callback_body("data" if step == "now" else step, payload)
                delay_s = 0.0 if step == "now" else WORK_S
                args = (payload, body, headers.get("traceparent"), delay_s)
                threading.Thread(target=call_back_later, args=args).start()


if __name__ == "__main__":
    serve(Handler)
