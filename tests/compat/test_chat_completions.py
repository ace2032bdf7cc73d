"""``POST /v1/chat/completions`` and ``GET /v1/models`` driven by the official ``openai`` package, unchanged,
against the running stack: each call is a lifecycle on the timeline, answers and errors are the SDK's own
objects and exceptions."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from django.conf import settings
from pydantic import BaseModel

from tests.conftest import make_project
from tests.lifecycle.helpers import get, scripted, timeline
from tests.orchestrator.test_front import start_front, stop

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def base_url(stack) -> str:
    # The realtime process serves chat completions; nginx and make dev's front route the path to it.
    return f"http://127.0.0.1:{stack.env['REALTIME_PORT']}/v1"


@pytest.fixture
def client(stack, api):
    with openai.OpenAI(base_url=base_url(stack), api_key=api.headers["Authorization"][7:], timeout=30) as sdk:
        yield sdk


def test_a_completion_is_a_direct_lifecycle_on_the_timeline(client, api):
    raw = client.chat.completions.with_raw_response.create(
        model="echo/x",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        temperature=0.2,
        metadata={"ticket": "T-1"},
        user="user-7",
    )
    completion = raw.parse()

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "echo/x"
    lifecycle_id = raw.headers["x-lifecycle-id"]
    assert completion.id == f"chatcmpl-{lifecycle_id}"
    lifecycle = get(api, lifecycle_id)
    assert lifecycle["status"] == "completed"
    assert lifecycle["delivery"]["mode"] == "direct"
    assert lifecycle["params"] == {"temperature": 0.2}
    assert lifecycle["metadata"] == {"ticket": "T-1"}
    assert lifecycle["subscriber"] == {"user_id": "user-7"}
    events = [e["event"] for e in timeline(api, lifecycle_id)]
    assert events[0] == "lifecycle.created" and events[-1] == "lifecycle.completed"
    assert "generation.attempt" in events


def test_the_request_reaches_an_openai_compatible_model_as_it_was_sent(client):
    completion = client.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": scripted("compat-mirror", {"gpt-4o-mini": ["mirror"]})}],
        temperature=0.5,
        max_completion_tokens=40,
        stop=["\n\n"],
        seed=7,
        presence_penalty=0.1,
    )

    asked = json.loads(completion.choices[0].message.content)
    assert asked == {
        "model": "gpt-4o-mini",
        "max_completion_tokens": 40,
        "presence_penalty": 0.1,
        "seed": 7,
        "stop": ["\n\n"],
        "temperature": 0.5,
    }
    assert completion.usage.prompt_tokens == 7 and completion.usage.completion_tokens == 3
    assert completion.usage.total_tokens == 10


def test_a_stream_passes_the_text_on_as_it_comes_and_ends_with_usage_and_done(client, api):
    prompt = "one two three four five six seven eight"
    with client.chat.completions.with_streaming_response.create(
        model="echo/x",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"params": {"latency_ms": 800}},
    ) as response:
        lifecycle_id = response.headers["x-lifecycle-id"]
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())

    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == prompt
    assert len(pieces) > 1  # streamed, not the whole answer at the end
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finished] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens >= 0
    assert {c.id for c in chunks} == {f"chatcmpl-{lifecycle_id}"}
    assert get(api, lifecycle_id)["status"] == "completed"


def test_a_stream_from_an_openai_compatible_model_passes_its_tokens_through(client):
    reply = "tokens from the upstream model arrive one by one"
    stream = client.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": scripted("compat-stream", {"gpt-4o-mini": ["trickle:1"]}, reply)}],
        stream=True,
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]

    assert "".join(pieces) == reply
    assert len(pieces) > 3


def test_an_anthropic_models_stream_is_mapped_to_chunks(client):
    reply = "the messages api streams its text blocks"
    stream = client.chat.completions.create(
        model="anthropic/claude-fake",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": scripted("compat-anthropic", {"claude-fake": ["ok"]}, reply)},
        ],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]

    assert "".join(pieces) == reply and len(pieces) > 1
    assert chunks[-1].usage.prompt_tokens == 11 and chunks[-1].usage.completion_tokens == len(reply.split())


def test_structured_output_parses_into_the_callers_model(client):
    class Answer(BaseModel):
        city: str
        population: int

    completion = client.chat.completions.parse(
        model="echo/x",
        messages=[{"role": "user", "content": '{"city": "Lyon", "population": 522250}'}],
        response_format=Answer,
    )

    assert completion.choices[0].message.parsed == Answer(city="Lyon", population=522250)


def test_concurrent_calls_each_get_their_own_answer(stack, api):
    async def main() -> list[str]:
        key = api.headers["Authorization"][7:]
        async with openai.AsyncOpenAI(base_url=base_url(stack), api_key=key, timeout=60) as sdk:
            calls = [
                sdk.chat.completions.create(
                    model="echo/x",
                    messages=[{"role": "user", "content": f"call {i}"}],
                    extra_body={"params": {"latency_ms": 500}},
                )
                for i in range(40)
            ]
            return [c.choices[0].message.content for c in await asyncio.gather(*calls)]

    assert asyncio.run(main()) == [f"call {i}" for i in range(40)]


def test_a_model_that_fails_raises_the_sdks_error_once_without_its_retries(client, api, fake_openai):
    prompt = scripted("compat-fails", {"gpt-4o-mini": ["500"]})
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": prompt}])

    error = raised.value
    assert error.status_code == 502
    assert error.code == "generation_failed"
    assert error.response.headers["x-should-retry"] == "false"
    assert "scripted failure" not in error.message  # the provider's own text stays on the timeline
    assert get(api, error.response.headers["x-lifecycle-id"])["status"] == "failed"
    # The SDK did not retry: one lifecycle, its provider attempts only (1 + PROVIDER_MAX_RETRIES).
    assert httpx.get(f"{fake_openai}/calls").json()["compat-fails/gpt-4o-mini"] == 1 + settings.PROVIDER_MAX_RETRIES


def test_bad_requests_raise_the_sdks_errors_and_write_nothing(client, api, stack):
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="nowhere/x", messages=messages)
    assert raised.value.code == "model_not_found" and raised.value.param == "model"

    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="echo/x", messages=messages, tools=[{"type": "function", "function": {"name": "f"}}]
        )
    assert raised.value.code == "unsupported_parameter" and raised.value.param == "tools"

    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="echo/x", messages=[])
    assert raised.value.param == "messages"

    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="echo/x", messages=messages, extra_body={"temperatur": 1})
    assert "temperatur" in raised.value.message

    bad_key = openai.OpenAI(base_url=base_url(stack), api_key="lk_000000000000_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.chat.completions.create(model="echo/x", messages=messages)

    not_json = httpx.post(
        f"{base_url(stack)}/chat/completions", content=b"{", headers={"Authorization": api.headers["Authorization"]}
    )
    assert not_json.status_code == 400 and not_json.json()["error"]["type"] == "invalid_request_error"

    assert api.get("/v1/lifecycles").json()["results"] == []


def test_one_projects_key_cannot_read_anothers_completion(client, api, stack):
    raw = client.chat.completions.with_raw_response.create(model="echo/x", messages=[{"role": "user", "content": "x"}])
    _, other_key = make_project("other")

    other = httpx.get(
        f"{stack.base_url}/v1/lifecycles/{raw.headers['x-lifecycle-id']}",
        headers={"Authorization": f"Bearer {other_key}"},
    )
    assert other.status_code == 404


def test_models_lists_what_the_project_may_name(client):
    listed = [model.id for model in client.models.list()]

    assert "echo/echo" in listed and "openai/gpt-4o-mini" in listed  # the stack configures OPENAI_BASE_URL
    assert client.models.retrieve("echo/echo").owned_by == "echo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nowhere/x")


def test_the_sdk_works_at_make_devs_one_origin(stack, api):
    """Pointed at the front (``make dev``'s one port): models from the web process, completions from the
    realtime process, on the SDK's one keep-alive connection."""
    front, port = start_front(web_port=stack.env["PORT"], realtime_port=stack.env["REALTIME_PORT"])
    try:
        key = api.headers["Authorization"][7:]
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, timeout=30) as sdk:
            assert "echo/echo" in [model.id for model in sdk.models.list()]
            answer = sdk.chat.completions.create(model="echo/x", messages=[{"role": "user", "content": "one"}])
            assert answer.choices[0].message.content == "one"
            stream = sdk.chat.completions.create(
                model="echo/x", messages=[{"role": "user", "content": "two words"}], stream=True
            )
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "two words"
    finally:
        stop(front)


def test_a_retry_with_the_same_idempotency_key_answers_from_the_first_lifecycle(client, api):
    messages = [{"role": "user", "content": "only once"}]
    first = client.chat.completions.with_raw_response.create(
        model="echo/x", messages=messages, extra_headers={"Idempotency-Key": "compat-once"}
    )
    again = client.chat.completions.with_raw_response.create(
        model="echo/x", messages=messages, extra_headers={"Idempotency-Key": "compat-once"}
    )

    assert again.headers["x-lifecycle-id"] == first.headers["x-lifecycle-id"]
    assert again.parse().choices[0].message.content == "only once"
    assert len(api.get("/v1/lifecycles").json()["results"]) == 1
    with pytest.raises(openai.ConflictError):
        client.chat.completions.create(
            model="echo/x",
            messages=[{"role": "user", "content": "another"}],
            extra_headers={"Idempotency-Key": "compat-once"},
        )
