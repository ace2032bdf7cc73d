"""An async Python client for the service: create a lifecycle, stream its events, await its result.

    async with LifecycleClient("http://127.0.0.1:8000", api_key) as client:
        created = await client.create(model="openai/gpt-4o-mini", prompt="Hi", metadata={"order": "42"})
        async for event in client.events(created):
            print(event["seq"], event["event"])
        # or simply:
        final = await client.result(created)   # {"event": "lifecycle.completed", "result": ...}

The event stream reconnects with exponential backoff after a dropped connection and resumes after the last
``seq`` it delivered, so a caller sees every event exactly once. Dependencies: httpx and websockets.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import websockets

FINAL_EVENTS = frozenset({"lifecycle.completed", "lifecycle.failed", "lifecycle.cancelled"})
CLOSE_NORMAL = 1000
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_KEY_REVOKED = 4403


class LifecycleError(Exception):
    """The API refused a request; ``error`` is its ``{"code", "message", "details"}``."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(f"{status} {error.get('code')}: {error.get('message')}")
        self.status = status
        self.error = error


@dataclass(frozen=True)
class Created:
    id: str
    status: str
    ws_token: str
    websocket_url: str


class LifecycleClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        max_backoff_s: float = 10.0,
        max_reconnects: int = 20,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )
        self.max_backoff_s = max_backoff_s
        self.max_reconnects = max_reconnects

    async def __aenter__(self) -> LifecycleClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs) -> dict[str, Any]:
        response = await self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "http_error", "message": response.text[:500]}
            raise LifecycleError(response.status_code, error)
        return response.json()

    async def create(self, *, idempotency_key: str | None = None, **body: Any) -> Created:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        data = await self._request("POST", "/v1/lifecycles", json=body, headers=headers)
        return Created(
            id=data["id"], status=data["status"], ws_token=data["ws_token"], websocket_url=data["links"]["websocket"]
        )

    async def get(self, lifecycle_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/v1/lifecycles/{lifecycle_id}")

    async def cancel(self, lifecycle_id: str) -> dict[str, Any]:
        return await self._request("POST", f"/v1/lifecycles/{lifecycle_id}/cancel")

    async def events(self, created: Created, *, since: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Every event after ``since``, each once, until the final one (which is yielded too)."""
        last_seq, failures, token = since, 0, created.ws_token
        while True:
            url = f"{created.websocket_url}?token={token}&since={last_seq}"
            try:
                async with websockets.connect(url, open_timeout=10) as socket:
                    failures = 0
                    async for raw in socket:
                        message = json.loads(raw)
                        if message.get("type") != "event" or message["seq"] <= last_seq:
                            continue
                        last_seq = message["seq"]
                        yield message
                        if message["event"] in FINAL_EVENTS:
                            return
                    if socket.close_code == CLOSE_NORMAL:
                        return  # the lifecycle was already over and we had seen its end
            except websockets.ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == CLOSE_KEY_REVOKED:
                    raise LifecycleError(403, {"code": "forbidden", "message": "token revoked"}) from exc
                if exc.rcvd is not None and exc.rcvd.code == CLOSE_TOKEN_EXPIRED:  # a fresh one, and on at once
                    minted = await self._request("POST", "/v1/realtime/tokens", json={"lifecycle_id": created.id})
                    token = minted["token"]
                    continue
            except websockets.InvalidStatus as exc:
                if exc.response.status_code == 403:
                    raise LifecycleError(403, {"code": "forbidden", "message": "token refused"}) from exc
            except (OSError, websockets.WebSocketException, TimeoutError):
                pass
            failures += 1
            if failures > self.max_reconnects:
                raise ConnectionError(f"gave up after {self.max_reconnects} reconnects")
            await asyncio.sleep(random.uniform(0, min(self.max_backoff_s, 0.25 * 2**failures)))

    async def result(self, created: Created) -> dict[str, Any]:
        """The final event: ``lifecycle.completed`` (with ``result``) or ``lifecycle.failed``/``cancelled``
        (with ``error``)."""
        async for event in self.events(created):
            if event["event"] in FINAL_EVENTS:
                return event
        final = await self.get(created.id)  # the socket closed on a lifecycle already over
        return {"event": f"lifecycle.{final['status']}", "result": final["result"], "error": final["error"]}
