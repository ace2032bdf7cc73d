from __future__ import annotations

import asyncio
import json
import time
from unittest import mock

import websockets
from django.conf import settings

from realtime import tokens


def ws_url(stack, lifecycle_id: str, token: str, since: int | None = None) -> str:
    url = f"{stack.ws_url}/ws/lifecycles/{lifecycle_id}?token={token}"
    return url if since is None else f"{url}&since={since}"


async def read_all(url: str, *, limit: int | None = None, timeout: float = 30) -> tuple[list[dict], int | None]:
    """Messages until the server closes (or ``limit`` messages); returns them and the close code."""
    messages: list[dict] = []
    async with websockets.connect(url, open_timeout=10) as socket:
        try:
            async with asyncio.timeout(timeout):
                async for raw in socket:
                    messages.append(json.loads(raw))
                    if limit is not None and len(messages) >= limit:
                        return messages, None
        except websockets.ConnectionClosed:
            pass
        return messages, socket.close_code


def collect(url: str, **kwargs) -> tuple[list[dict], int | None]:
    return asyncio.run(read_all(url, **kwargs))


def refused(url: str) -> int:
    """The HTTP status with which the handshake was refused."""

    async def attempt() -> int:
        try:
            async with websockets.connect(url, open_timeout=10):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(attempt())


def token_expiring_in(seconds: float, **scope) -> str:
    """A realtime token for ``scope`` that stays valid for ``seconds`` more."""
    signed_at = time.time() - settings.REALTIME_TOKEN_TTL_S + seconds
    with mock.patch("django.core.signing.time.time", return_value=signed_at):
        return tokens.mint(tokens.RealtimeScope(**scope))
