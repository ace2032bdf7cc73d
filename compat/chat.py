"""The Chat Completions API's objects, translated to and from a lifecycle (shared/ARCHITECTURE.md,
OpenAI-compatible endpoint). Pure functions: the views in :mod:`compat.views` do the I/O.

A request becomes a :class:`~lifecycle.services.LifecycleRequest` in ``direct`` mode: ``messages`` pass to
the provider as they are, the sampling parameters go in ``params``, ``response_format`` keeps its meaning
(a ``json_schema`` is validated like any lifecycle's), ``user`` becomes the subscriber and ``metadata`` the
lifecycle's metadata. What the service cannot honour (tools, several choices, logprobs, audio) is refused
with OpenAI's own error shape rather than silently dropped. Beyond OpenAI's fields, two of a lifecycle's
may come in the SDKs' ``extra_body``: ``fallbacks`` (a list of ``provider/model``) and ``params`` (what a
provider takes beyond the Chat Completions fields: Anthropic's ``top_k``, the echo model's
``latency_ms``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jsonschema
import orjson
from django.conf import settings

from lifecycle.delivery import DIRECT
from lifecycle.models import Lifecycle
from lifecycle.providers import PROVIDERS
from lifecycle.services import LifecycleRequest
from lifecycle.states import ErrorCode

MODEL = re.compile(rf"({'|'.join(sorted(PROVIDERS))})/\S{{1,190}}")
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_MESSAGES = 1000
MAX_FALLBACKS = 5
MAX_METADATA_PAIRS = 16

# Passed to the model as they are (lifecycle ``params``), each checked for its type.
_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGERS = ("max_tokens", "max_completion_tokens", "seed")
# Accepted and without effect here: they only shape what OpenAI itself stores or bills.
_IGNORED = frozenset({"store", "service_tier", "prompt_cache_key", "safety_identifier"})
# Fields of the API this service does not honour: refused, since dropping them would change the answer.
_UNSUPPORTED = frozenset(
    {
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "parallel_tool_calls",
        "logprobs",
        "top_logprobs",
        "audio",
        "modalities",
        "prediction",
        "web_search_options",
        "verbosity",
    }
)
_KNOWN = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "response_format",
        "user",
        "metadata",
        "stop",
        "logit_bias",
        "reasoning_effort",
        "fallbacks",
        "params",
        *_NUMBERS,
        *_INTEGERS,
    }
)


@dataclass
class ChatError(Exception):
    """An answer in OpenAI's error envelope, with the status the SDKs map to their exceptions."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    retry: bool | None = None  # ``x-should-retry``: what the SDKs' automatic retries should do
    retry_after: float | None = None

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _invalid(message: str, param: str | None = None, code: str | None = None) -> ChatError:
    return ChatError(400, message, param=param, code=code)


@dataclass(frozen=True)
class ChatRequest:
    lifecycle: LifecycleRequest
    stream: bool
    include_usage: bool


def chat_request(body: Any) -> ChatRequest:
    """The lifecycle a Chat Completions request asks for, or :class:`ChatError` (400/404) saying why not."""
    if not isinstance(body, dict):
        raise _invalid("The body must be a JSON object.")
    for name in body:
        if name in _UNSUPPORTED and body[name] not in (None, False, [], {}):
            raise _invalid(f"'{name}' is not supported by this service.", name, "unsupported_parameter")
        if name not in _KNOWN and name not in _IGNORED and name not in _UNSUPPORTED:
            raise _invalid(f"Unrecognized request argument supplied: {name}", name)
    if body.get("n") not in (None, 1):
        raise _invalid("Only n=1 is supported.", "n", "unsupported_value")
    model = _model(body.get("model"), "model")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _invalid("'stream' must be a boolean.", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _invalid("'stream_options' must be an object.", "stream_options")
    if options and not stream:
        raise _invalid("'stream_options' is only allowed when 'stream' is true.", "stream_options")
    extra = body.get("params") or {}
    if not isinstance(extra, dict):
        raise _invalid("'params' must be an object.", "params")
    latency = extra.get("latency_ms", 0)
    if not isinstance(latency, int | float) or isinstance(latency, bool) or not 0 <= latency <= 600_000:
        raise _invalid("'params.latency_ms' must be a number of milliseconds, 0 to 600000.", "params.latency_ms")
    params = {k: v for k, v in extra.items() if k != "stream"} | _params(body) | ({"stream": True} if stream else {})
    fallbacks = body.get("fallbacks") or []
    if not isinstance(fallbacks, list) or len(fallbacks) > MAX_FALLBACKS:
        raise _invalid(f"'fallbacks' must be a list of at most {MAX_FALLBACKS} models.", "fallbacks")
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or not 0 < len(user) <= 200):
        raise _invalid("'user' must be a string of 1 to 200 characters.", "user")
    request = LifecycleRequest(
        model=model,
        messages=_messages(body.get("messages")),
        params=params,
        response_format=_response_format(body.get("response_format")),
        fallbacks=[_model(f, "fallbacks") for f in fallbacks],
        delivery={"mode": DIRECT},
        metadata=_metadata(body.get("metadata")),
        subscriber={"user_id": user} if user else {},
    )
    return ChatRequest(lifecycle=request, stream=stream, include_usage=options.get("include_usage") is True)


def _model(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(f"'{param}' is required: a model as 'provider/model'.", param)
    if not MODEL.fullmatch(value):
        raise ChatError(
            404,
            f"The model '{value[:200]}' does not exist: use 'provider/model' with a provider among "
            f"{', '.join(sorted(PROVIDERS))}.",
            param=param,
            code="model_not_found",
        )
    return value


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _invalid("'messages' must be a non-empty array.", "messages")
    if len(value) > MAX_MESSAGES:
        raise _invalid(f"'messages' holds at most {MAX_MESSAGES} messages.", "messages")
    for index, message in enumerate(value):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _invalid(f"'{param}' must be an object.", param)
        if message.get("role") not in ROLES:
            raise _invalid(f"'{param}.role' must be one of {', '.join(sorted(ROLES))}.", f"{param}.role")
        content = message.get("content")
        if not isinstance(content, str | list) and not (content is None and message["role"] == "assistant"):
            raise _invalid(f"'{param}.content' must be a string or an array of content parts.", f"{param}.content")
    return value


def _params(body: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name in _NUMBERS:
        value = body.get(name)
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise _invalid(f"'{name}' must be a number.", name)
            params[name] = value
    for name in _INTEGERS:
        value = body.get(name)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise _invalid(f"'{name}' must be a non-negative integer.", name)
            params[name] = value
    stop = body.get("stop")
    if stop is not None:
        if not (isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))):
            raise _invalid("'stop' must be a string or an array of strings.", "stop")
        params["stop"] = stop
    if body.get("logit_bias") is not None:
        if not isinstance(body["logit_bias"], dict):
            raise _invalid("'logit_bias' must be an object.", "logit_bias")
        params["logit_bias"] = body["logit_bias"]
    if body.get("reasoning_effort") is not None:
        if not isinstance(body["reasoning_effort"], str):
            raise _invalid("'reasoning_effort' must be a string.", "reasoning_effort")
        params["reasoning_effort"] = body["reasoning_effort"]
    return params


def _response_format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise _invalid("'response_format.type' must be text, json_object or json_schema.", "response_format")
    if value["type"] == "text":
        return None
    if value["type"] == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise _invalid("'response_format.json_schema' must be an object.", "response_format.json_schema")
        try:
            jsonschema.Draft202012Validator.check_schema(spec.get("schema", {}))
        except jsonschema.SchemaError as exc:
            raise _invalid(
                f"Invalid schema for response_format: {exc.message}", "response_format.json_schema.schema"
            ) from exc
    return value


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA_PAIRS:
        raise _invalid(f"'metadata' must be an object of at most {MAX_METADATA_PAIRS} pairs.", "metadata")
    for key, item in value.items():
        if len(key) > 64 or not isinstance(item, str) or len(item) > 512:
            raise _invalid("'metadata' keys are at most 64 characters, values strings of at most 512.", "metadata")
    return value


# ---- answers -----------------------------------------------------------------------------------------


def completion_id(lifecycle_id) -> str:
    return f"chatcmpl-{lifecycle_id}"


def content(lifecycle: Lifecycle) -> str:
    """The assistant message's text: the output itself, or a structured output as JSON."""
    output = lifecycle.output
    if isinstance(output, str):
        return output
    return "" if output is None else orjson.dumps(output).decode()


def usage(lifecycle: Lifecycle) -> dict[str, int]:
    used = lifecycle.usage or {}
    prompt, completion = int(used.get("input_tokens", 0)), int(used.get("output_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _model_name(lifecycle: Lifecycle) -> str:
    return lifecycle.model_used or lifecycle.model


def completion(lifecycle: Lifecycle) -> dict[str, Any]:
    """A completed lifecycle as a ``chat.completion`` object."""
    return {
        "id": completion_id(lifecycle.id),
        "object": "chat.completion",
        "created": int(lifecycle.created_at.timestamp()),
        "model": _model_name(lifecycle),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content(lifecycle), "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage(lifecycle),
        "system_fingerprint": None,
        "service_tier": None,
    }


def chunk(lifecycle: Lifecycle, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a stream."""
    return {
        "id": completion_id(lifecycle.id),
        "object": "chat.completion.chunk",
        "created": int(lifecycle.created_at.timestamp()),
        "model": _model_name(lifecycle),
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        "system_fingerprint": None,
    }


def usage_chunk(lifecycle: Lifecycle) -> dict[str, Any]:
    """The stream's last chunk when ``stream_options.include_usage`` asked for it: no choices, the usage."""
    return {**chunk(lifecycle, {}), "choices": [], "usage": usage(lifecycle)}


# What a lifecycle's error becomes. The model refusing the request is the caller's to fix (400); the rest
# happened after our own retries and fallbacks, so the SDKs are told not to retry (a retry is a new
# lifecycle, and its cost): ``x-should-retry: false``.
_ERROR_STATUS = {
    ErrorCode.INVALID_REQUEST: (400, "invalid_request_error"),
    ErrorCode.GENERATION_FAILED: (502, "api_error"),
    ErrorCode.OUTPUT_INVALID: (502, "api_error"),
    ErrorCode.CANCELLED: (409, "invalid_request_error"),
}


def failure(lifecycle: Lifecycle) -> ChatError:
    """A lifecycle that ended without a result, as the error the SDKs raise. Only the friendly message and
    the code: the provider's own error text and the details stay on the timeline, for operators."""
    error = lifecycle.error or {}
    code = error.get("code") or ErrorCode.GENERATION_FAILED
    status, kind = _ERROR_STATUS.get(code, (502, "api_error"))
    return ChatError(status, error.get("message") or "The model could not produce an answer.", kind, code, retry=False)


def timed_out(lifecycle_id) -> ChatError:
    return ChatError(
        504,
        f"No answer within {settings.CHAT_COMPLETIONS_TIMEOUT_S:.0f} s; the request goes on as lifecycle "
        f"{lifecycle_id} (GET /v1/lifecycles/{lifecycle_id}).",
        "api_error",
        "timeout",
        retry=False,
    )
