"""``Prefer: wait=N`` (RFC 7240) on ``POST /v1/lifecycles`` and ``GET /v1/lifecycles/{id}``: the answer is
held up to N seconds (at most 60) for the lifecycle to end, then it is ``200`` with the final resource, or
else the usual answer (``202`` for a create). Either way it says ``Preference-Applied: wait=N``.

The realtime process serves these (nginx and ``make dev``'s front send it every request that asks to
wait): the view itself runs on a database thread as in the web process, and the wait is a coroutine that
follows the lifecycle's channel group, so a waiting request holds no thread. A final event ends the wait;
so does the database saying the lifecycle ended, which is read once at the start and again after each
quiet ``POLL_S`` (an event lost while Redis was away). The web process does not honour the preference
(RFC 7240 lets a server ignore it) and answers at once, without ``Preference-Applied``.
"""

from __future__ import annotations

import asyncio
import functools

from channels.layers import get_channel_layer
from django.http import HttpRequest, HttpResponse
from rest_framework.renderers import JSONRenderer

from lifecycle.api.serializers import LifecycleSerializer
from lifecycle.models import Lifecycle
from lifecycle.states import TERMINAL
from orchestrator.outages import transient
from realtime.groups import lifecycle_group
from realtime.messages import FINAL_EVENTS, in_db_thread

MAX_WAIT_S = 60
POLL_S = 2.0


def preferred_wait(request: HttpRequest) -> int | None:
    """The ``wait`` preference in seconds, capped at ``MAX_WAIT_S``; ``None`` when it is absent or not a
    number (an unknown or malformed preference is ignored, as RFC 7240 asks)."""
    for preference in request.headers.get("Prefer", "").split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() == "wait":
            value = value.strip().strip('"')
            return min(int(value), MAX_WAIT_S) if value.isdigit() else None
    return None


def _rendered(view, request: HttpRequest, *args, **kwargs) -> HttpResponse:
    """The DRF view's answer, rendered on this thread (else Django would hop to its one sync thread)."""
    response = view(request, *args, **kwargs)
    if hasattr(response, "render"):
        response.render()
    return response


def _ended(lifecycle_id: str) -> bool:
    return Lifecycle.objects.filter(id=lifecycle_id, status__in=TERMINAL).exists()


def _final(lifecycle_id: str) -> bytes:
    return JSONRenderer().render(LifecycleSerializer(Lifecycle.objects.get(id=lifecycle_id)).data)


async def wait_for_end(lifecycle_id: str, timeout_s: float) -> bool:
    """Whether the lifecycle ended within ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    layer = get_channel_layer()
    channel = await layer.new_channel("wait.")
    receiving: asyncio.Future | None = None
    try:
        try:
            await layer.group_add(lifecycle_group(lifecycle_id), channel)  # before reading, as a socket does
            joined = True
        except Exception as exc:
            if not transient(exc):
                raise
            joined = False  # Redis away: the database alone says when it ends
        if await in_db_thread(_ended)(lifecycle_id):
            return True
        while (remaining := deadline - loop.time()) > 0:
            if joined:
                receiving = receiving or asyncio.ensure_future(layer.receive(channel))
                done, _ = await asyncio.wait({receiving}, timeout=min(remaining, POLL_S))
                if done:
                    message, receiving = receiving.result(), None
                    if message.get("type") == "lifecycle.event" and message["event"].get("event") in FINAL_EVENTS:
                        return True
                    continue
            else:
                await asyncio.sleep(min(remaining, POLL_S))
            if await in_db_thread(_ended)(lifecycle_id):  # quiet for POLL_S: was an event lost?
                return True
        return False
    finally:
        if receiving is not None:
            receiving.cancel()
        await layer.forget(channel)


def waiting(view):
    """``view`` (a DRF view answering one lifecycle) with ``Prefer: wait`` honoured."""

    @functools.wraps(view)
    async def waiting_view(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        wait_s = preferred_wait(request)
        response = await in_db_thread(_rendered)(view, request, *args, **kwargs)
        data = getattr(response, "data", None)
        if wait_s is None or response.status_code not in (200, 202) or not isinstance(data, dict) or "id" not in data:
            return response
        lifecycle_id = str(data["id"])
        if not (response.status_code == 200 and data.get("status") in TERMINAL) and await wait_for_end(
            lifecycle_id, wait_s
        ):
            response = HttpResponse(await in_db_thread(_final)(lifecycle_id), content_type="application/json")
        response["Preference-Applied"] = f"wait={wait_s}"
        return response

    waiting_view.csrf_exempt = True  # DRF's views are; the wrapper keeps it so
    return waiting_view
