"""The Python client against the real stack."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from unittest import mock

import pytest
from django.conf import settings

from realtime import tokens
from realtime.client import LifecycleClient, LifecycleError
from tests.lifecycle.helpers import timeline

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def test_create_and_await_the_result(api, stack, project_key):
    async def scenario():
        async with LifecycleClient(stack.base_url, project_key[1]) as client:
            created = await client.create(model="echo/x", prompt="from the sdk")
            return created, await client.result(created)

    created, final = asyncio.run(scenario())

    assert final["event"] == "lifecycle.completed"
    assert final["result"] == "from the sdk"
    assert created.status == "pending"


def test_a_token_that_expires_mid_stream_is_renewed_and_the_stream_goes_on(api, stack, project_key):
    async def scenario():
        async with LifecycleClient(stack.base_url, project_key[1]) as client:
            created = await client.create(model="echo/x", prompt="outlives its token", params={"latency_ms": 6000})
            signed_at = time.time() - settings.REALTIME_TOKEN_TTL_S + 3  # valid for 3 s more
            with mock.patch("django.core.signing.time.time", return_value=signed_at):
                short = tokens.mint(tokens.RealtimeScope(project_id=str(api.project.id), lifecycle_id=created.id))
            return [event async for event in client.events(dataclasses.replace(created, ws_token=short))]

    events = asyncio.run(scenario())

    assert events[-1]["event"] == "lifecycle.completed" and events[-1]["result"] == "outlives its token"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # none lost or repeated across


def test_api_errors_raise_with_the_error_body(stack, project_key):
    async def scenario():
        async with LifecycleClient(stack.base_url, project_key[1]) as client:
            await client.create(model="nosuch/model", prompt="x")

    with pytest.raises(LifecycleError) as raised:
        asyncio.run(scenario())
    assert raised.value.status == 400
    assert raised.value.error["code"] == "invalid_request"


def test_the_stream_survives_a_realtime_restart_without_losing_or_repeating_events(api, stack, project_key):
    async def scenario():
        async with LifecycleClient(stack.base_url, project_key[1], max_backoff_s=1) as client:
            created = await client.create(model="echo/x", prompt="hold on", params={"latency_ms": 4000})
            seen = []
            async for event in client.events(created):
                seen.append(event)
                if event["event"] == "lifecycle.generating":
                    # The realtime process dies under the open socket and comes back.
                    await asyncio.to_thread(stack.kill, "realtime")
                    await asyncio.to_thread(stack.start, "realtime")
            return created, seen

    created, seen = asyncio.run(scenario())

    assert [e["seq"] for e in seen] == [e["seq"] for e in timeline(api, created.id)]
    assert seen[-1]["event"] == "lifecycle.completed"
    assert seen[-1]["result"] == "hold on"
