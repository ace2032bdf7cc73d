from __future__ import annotations

import asyncio
import uuid

import httpx

from webhooks import sender


def endpoint(api, customer_backend: str, script: str, **fields) -> tuple[dict, str]:
    """Register an endpoint on the customer backend answering with ``script``; returns it and its scenario."""
    scenario = uuid.uuid4().hex
    response = api.post(
        "/v1/webhook-endpoints", json={"url": f"{customer_backend}/hooks/{scenario}/{script}", **fields}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    share_secrets(customer_backend, scenario, [created["secret"]])
    return created, scenario


def share_secrets(customer_backend: str, scenario: str, secrets: list[str]) -> None:
    httpx.post(f"{customer_backend}/secrets/{scenario}", json={"secrets": secrets}).raise_for_status()


def received(customer_backend: str, scenario: str) -> list[dict]:
    return httpx.get(f"{customer_backend}/received/{scenario}").json()


def send_once(url: str, *, body: bytes = b"{}", timeout: float = 5, **options) -> sender.AttemptResult:
    """One attempt from a fresh :class:`sender.Sender`, as the delivery process makes it."""

    async def attempt() -> sender.AttemptResult:
        client = sender.Sender(**options)
        try:
            return await client.send(url, headers={}, body=body, timeout=timeout)
        finally:
            await client.aclose()

    return asyncio.run(attempt())
