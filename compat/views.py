"""``POST /v1/chat/completions`` and ``GET /v1/models``, as OpenAI answers them (shared/ARCHITECTURE.md,
OpenAI-compatible endpoint): the official SDKs work unchanged with ``base_url=<PUBLIC_BASE_URL>/v1`` and a
project API key.

A chat completion is a lifecycle in ``direct`` mode. The realtime process serves it (nginx and ``make
dev``'s front route the path there), because the answer is awaited as a coroutine that follows the
lifecycle's channel group, as ``Prefer: wait`` does: a call in progress holds no thread.

1. Authenticate the key, apply the project's rate limit, translate the body (:mod:`compat.chat`); each
   refusal is OpenAI's error envelope with its status, and nothing is written.
2. Record the lifecycle, under an id picked here so that a stream can follow its group before the
   generator can send anything.
3. Without ``stream``: wait for the end, then answer ``chat.completion`` or the error.
   With ``stream``: wait for the first text or the end (an error that comes before any text is still an
   error status), then answer ``text/event-stream``: the role, each delta as the generator streams it,
   the last chunk with ``finish_reason``, the usage chunk if asked for, and ``data: [DONE]``. What the
   channel layer lost of the deltas (they are ephemeral) is made up from the stored result at the end, so
   the text the client assembles is always the whole answer.

Every answer carries ``x-lifecycle-id``: the timeline, the console and replay work on it as on any other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator

import orjson
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from compat import chat
from lifecycle import identity, services, throttling
from lifecycle.models import ApiKey, Lifecycle
from lifecycle.states import TERMINAL, Status
from orchestrator import db, metrics, telemetry
from orchestrator.outages import transient
from realtime.groups import lifecycle_group
from realtime.messages import FINAL_EVENTS, in_db_thread

log = logging.getLogger(__name__)

POLL_S = 2.0  # quiet this long, the database says whether the lifecycle ended (an event lost with Redis)
KEEPALIVE_S = 15.0
MAX_IDEMPOTENCY_KEY = 255


def _error(error: chat.ChatError, lifecycle_id=None) -> JsonResponse:
    response = JsonResponse(error.body(), status=error.status)
    if error.retry is not None:
        response["x-should-retry"] = "true" if error.retry else "false"
    if error.retry_after is not None:
        response["Retry-After"] = str(round(error.retry_after))
    if lifecycle_id is not None:
        response["x-lifecycle-id"] = str(lifecycle_id)
    return response


def _unavailable() -> JsonResponse:
    message = "The service is briefly unavailable; try again shortly."
    return _error(chat.ChatError(503, message, "api_error", retry_after=2))


def _not_allowed(request: HttpRequest, method: str) -> chat.ChatError:
    return chat.ChatError(405, f"Method {request.method} is not allowed; use {method}.", code="method_not_allowed")


def _authenticated(request: HttpRequest) -> ApiKey | identity.Subscriber | chat.ChatError:
    """The project's API key, or a user's own JWT (lifecycle.identity), within its rate limits."""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    credential = credential.strip() if scheme == "Bearer" else ""
    if identity.looks_like_jwt(credential):
        try:
            key = identity.authenticate_request(request, credential)
        except identity.InvalidToken as exc:
            return chat.ChatError(401, str(exc), code="invalid_token")
        except identity.OriginRefused as exc:
            return chat.ChatError(403, str(exc), code="origin_not_allowed")
    else:
        key = services.api_key_authenticate(raw_key=credential) if credential else None
    if key is None:
        return chat.ChatError(401, "Incorrect API key provided.", code="invalid_api_key")
    subscriber = key if isinstance(key, identity.Subscriber) else None
    retry_after = throttling.project_retry_after(key.project, subscriber)
    if retry_after is not None:
        return chat.ChatError(
            429, "Rate limit reached for this project.", "requests", "rate_limit_exceeded", retry_after=retry_after
        )
    return key


Caller = ApiKey | identity.Subscriber


def _create(key: Caller, request: chat.ChatRequest, lifecycle_id, idempotency_key, parent) -> Lifecycle:
    with telemetry.span("lifecycle.accept", parent=parent, api="chat.completions") as traceparent:
        lifecycle, created = services.lifecycle_create(
            project=key.project,
            request=request.lifecycle,
            idempotency_key=idempotency_key,
            traceparent=traceparent,
            lifecycle_id=lifecycle_id,
        )
    if created:
        metrics.ACCEPTED.inc()
    return lifecycle


def _load(lifecycle_id) -> Lifecycle:
    return Lifecycle.objects.get(id=lifecycle_id)


def _ended(lifecycle_id) -> bool:
    return Lifecycle.objects.filter(id=lifecycle_id, status__in=TERMINAL).exists()


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _error(_not_allowed(request, "POST"))
    try:
        key = await in_db_thread(_authenticated)(request)
        if isinstance(key, chat.ChatError):
            return _error(key)
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return _error(chat.ChatError(400, "The body is not valid JSON."))
        idempotency_key = request.headers.get("Idempotency-Key") or None
        if idempotency_key and len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            return _error(chat.ChatError(400, f"Idempotency-Key is at most {MAX_IDEMPOTENCY_KEY} characters."))
        asked = chat.chat_request(body)
        if isinstance(key, identity.Subscriber):  # who the subscriber is comes from its token, not the body
            asked = dataclasses.replace(asked, lifecycle=dataclasses.replace(asked.lifecycle, subscriber=key.identity))
    except chat.ChatError as exc:
        return _error(exc)
    except Exception as exc:
        if not transient(exc):
            raise
        return _unavailable()

    output = Output(uuid.uuid4())
    try:
        if asked.stream:
            await output.follow()  # before the lifecycle exists: no delta can come before we listen
        lifecycle = await in_db_thread(_create)(
            key, asked, output.lifecycle_id, idempotency_key, request.headers.get("traceparent")
        )
    except services.IdempotencyConflict:
        await output.forget()
        return _error(chat.ChatError(409, "This Idempotency-Key was already used with a different request body."))
    except services.BudgetExceeded as exc:
        await output.forget()
        # Not retried by the SDKs: no retry helps before the day is over.
        return _error(
            chat.ChatError(
                429, str(exc), "insufficient_quota", "budget_exceeded", retry=False, retry_after=exc.retry_after_s
            )
        )
    except Exception as exc:
        await output.forget()
        if not transient(exc):
            raise
        return _unavailable()  # nothing was written: the SDKs retry this
    # The lifecycle exists from here, so an outage is waited out (db.patiently): a retry would be another one.
    if lifecycle.id != output.lifecycle_id:  # an Idempotency-Key seen before: follow the first one
        await output.forget()
        output = Output(lifecycle.id)
        if asked.stream:
            await output.follow()
    if asked.stream:
        return await _streamed(output, asked)
    return await _answered(output)


async def _answered(output: Output) -> HttpResponse:
    await output.follow()
    ended = await db.patiently(_ended, output.lifecycle_id)  # it may have ended before we followed it
    if not ended and not await output.wait_for_end(settings.CHAT_COMPLETIONS_TIMEOUT_S):
        await output.forget()
        return _error(chat.timed_out(output.lifecycle_id), output.lifecycle_id)
    await output.forget()
    lifecycle = await db.patiently(_load, output.lifecycle_id)
    if lifecycle.status != Status.COMPLETED:
        return _error(chat.failure(lifecycle), lifecycle.id)
    response = JsonResponse(chat.completion(lifecycle))
    response["x-lifecycle-id"] = str(lifecycle.id)
    return response


async def _streamed(output: Output, asked: chat.ChatRequest) -> HttpResponse:
    first = await output.next_text(settings.CHAT_COMPLETIONS_TIMEOUT_S)
    if first is Output.TIMED_OUT:
        await output.forget()
        return _error(chat.timed_out(output.lifecycle_id), output.lifecycle_id)
    lifecycle = await db.patiently(_load, output.lifecycle_id)
    if first is Output.ENDED:
        await output.forget()
        if lifecycle.status != Status.COMPLETED:
            return _error(chat.failure(lifecycle), lifecycle.id)
    response = StreamingHttpResponse(_chunks(output, asked, lifecycle, first), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    response["x-lifecycle-id"] = str(lifecycle.id)
    return response


def _frame(data: dict) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


async def _chunks(output: Output, asked: chat.ChatRequest, lifecycle: Lifecycle, first) -> AsyncIterator[bytes]:
    try:
        yield _frame(chat.chunk(lifecycle, {"role": "assistant", "content": "", "refusal": None}))
        piece = first
        deadline = asyncio.get_running_loop().time() + settings.CHAT_COMPLETIONS_TIMEOUT_S
        while isinstance(piece, str):
            yield _frame(chat.chunk(lifecycle, {"content": piece}))
            while (piece := await output.next_text(min(KEEPALIVE_S, deadline - output.now()))) is Output.TIMED_OUT:
                if output.now() >= deadline:
                    yield _frame(chat.timed_out(lifecycle.id).body())
                    return
                yield b": keep-alive\n\n"
        await output.forget()
        lifecycle = await db.patiently(_load, lifecycle.id)
        if lifecycle.status != Status.COMPLETED:
            # Text was already sent: the SDKs raise an error event met in the stream as an APIError.
            yield _frame(chat.failure(lifecycle).body())
            return
        if rest := output.rest_of(chat.content(lifecycle)):
            yield _frame(chat.chunk(lifecycle, {"content": rest}))
        yield _frame(chat.chunk(lifecycle, {}, finish_reason="stop"))
        if asked.include_usage:
            yield _frame(chat.usage_chunk(lifecycle))
        yield b"data: [DONE]\n\n"
    finally:
        await output.forget()


class Output:
    """What the channel layer brings about one lifecycle: its text in order (deltas, when it streams), then
    that it ended. A delta that arrives out of place (one before it was lost) stops the deltas; the rest of
    the text then comes from the stored result (:meth:`rest_of`)."""

    ENDED = object()
    TIMED_OUT = object()

    def __init__(self, lifecycle_id) -> None:
        self.lifecycle_id = lifecycle_id
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.receiving: asyncio.Future | None = None
        self.sent = ""  # the text handed on so far
        self.gap = False
        self.now = asyncio.get_running_loop().time

    async def follow(self) -> None:
        if self.channel is None:
            self.channel = await self.layer.new_channel("chat.")
            try:
                await self.layer.group_add(lifecycle_group(str(self.lifecycle_id)), self.channel)
            except Exception as exc:
                if not transient(exc):
                    raise
                log.warning("chat completions: Redis away; following %s by the database only", self.lifecycle_id)
                await self.layer.forget(self.channel)
                self.channel = None

    async def forget(self) -> None:
        if self.receiving is not None:
            self.receiving.cancel()
            self.receiving = None
        if self.channel is not None:
            channel, self.channel = self.channel, None
            await self.layer.forget(channel)

    async def wait_for_end(self, timeout_s: float) -> bool:
        """Whether the lifecycle ended within ``timeout_s``; deltas pass by unused."""
        while (piece := await self.next_text(timeout_s)) is not Output.ENDED:
            if piece is Output.TIMED_OUT:
                return False
        return True

    async def next_text(self, timeout_s: float):
        """The next piece of text, :attr:`ENDED` once the lifecycle has ended, or :attr:`TIMED_OUT`."""
        deadline = self.now() + max(0.0, timeout_s)
        while (remaining := deadline - self.now()) > 0:
            if self.channel is None:
                await asyncio.sleep(min(remaining, POLL_S))
            else:
                self.receiving = self.receiving or asyncio.ensure_future(self.layer.receive(self.channel))
                done, _ = await asyncio.wait({self.receiving}, timeout=min(remaining, POLL_S))
                if done:
                    message, self.receiving = self.receiving.result(), None
                    if message.get("type") == "lifecycle.event" and message["event"].get("event") in FINAL_EVENTS:
                        return Output.ENDED
                    if message.get("type") == "lifecycle.delta" and (text := self._placed(message["delta"])):
                        return text
                    continue
            if await db.patiently(_ended, self.lifecycle_id):  # quiet for POLL_S: was the end lost?
                return Output.ENDED
        return Output.TIMED_OUT

    def _placed(self, delta: dict) -> str:
        """What of a delta follows the text sent so far."""
        text, offset = delta.get("text") or "", delta.get("offset", 0)
        if self.gap or offset > len(self.sent):
            self.gap = True
            return ""
        new = text[len(self.sent) - offset :]
        self.sent += new
        return new

    def rest_of(self, content: str) -> str:
        """What of the whole answer the client has not had yet."""
        return content[len(self.sent) :] if content.startswith(self.sent) else ""


# ---- GET /v1/models -----------------------------------------------------------------------------------


def _listed() -> list[str]:
    configured = {"echo"}
    if settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL != settings.OPENAI_DEFAULT_BASE_URL:
        configured.add("openai")
    if settings.ANTHROPIC_API_KEY:
        configured.add("anthropic")
    return [m for m in settings.LISTED_MODELS if m.partition("/")[0] in configured]


def _model(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": name.partition("/")[0]}


def models(request: HttpRequest, model: str | None = None) -> HttpResponse:
    """The models a project may name: those of ``LISTED_MODELS`` whose provider is configured (any
    ``provider/model`` of a configured provider works in a request; this is what the SDKs list)."""
    if request.method != "GET":
        return _error(_not_allowed(request, "GET"))
    key = _authenticated(request)
    if isinstance(key, chat.ChatError):
        return _error(key)
    if model is None:
        return JsonResponse({"object": "list", "data": [_model(name) for name in _listed()]})
    if model not in _listed():
        message = f"The model '{model[:200]}' does not exist."
        return _error(chat.ChatError(404, message, param="model", code="model_not_found"))
    return JsonResponse(_model(model))


def served_elsewhere(request: HttpRequest) -> HttpResponse:
    """The web process's answer: its workers hold a thread per request, so chat completions are the
    realtime process's to serve (nginx and make dev's front route the path there)."""
    error = chat.ChatError(421, "Chat completions are served by the realtime process; route this path to it.")
    return _error(error)
