"""The designs a user would otherwise write, for the side-by-side benchmarks. Mounted only when
BENCH_BASELINE is set (never in production).

- :func:`sync_generate`: frontend → backend → LLM → response, the request holding a worker for the whole
  model call (the burst scenario).
- :func:`naive_enqueue` + :func:`naive_generate`: the usual asynchronous version, a naive Celery + Redis
  pipeline in the same Django project: the ``POST`` enqueues a Celery task that calls the model and then
  posts the result to a webhook. No outbox, no Kafka, no timeline, no sockets, no retries (the cpu
  scenario's peer: what all that we add costs on top of it).
"""

from __future__ import annotations

import httpx
import orjson
from celery import shared_task
from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from lifecycle.services import api_key_authenticate


def _unauthenticated(request) -> JsonResponse | None:
    key = api_key_authenticate(raw_key=request.headers.get("Authorization", "").removeprefix("Bearer ").strip())
    return JsonResponse({"error": {"code": "unauthenticated"}}, status=401) if key is None else None


def _model(post, prompt: str) -> str:
    """The fake model's answer to ``prompt``, asked with ``post`` (a new client's, or a pooled one's)."""
    response = post(
        f"{settings.OPENAI_BASE_URL}/chat/completions",
        json={"model": "bench", "messages": [{"role": "user", "content": prompt}]},
        timeout=settings.PROVIDER_TIMEOUT_S,
    )
    return response.json()["choices"][0]["message"]["content"]


@csrf_exempt
@require_POST
def sync_generate(request):
    if refused := _unauthenticated(request):
        return refused
    return JsonResponse({"output": _model(httpx.post, request.body.decode())})


@csrf_exempt
@require_POST
def naive_enqueue(request):
    if refused := _unauthenticated(request):
        return refused
    body = orjson.loads(request.body)
    task = naive_generate.delay(body["prompt"], body["webhook_url"])
    return JsonResponse({"id": task.id, "status": "queued"}, status=202)


# One pooled client per worker process, as a careful user would keep (a client per call costs more CPU in
# TLS setup than the rest of the task).
_client = httpx.Client()


@shared_task(name="bench.naive_generate", ignore_result=True)
def naive_generate(prompt: str, webhook_url: str) -> None:
    output = _model(_client.post, prompt)
    _client.post(webhook_url, json={"type": "generated", "data": {"output": output}}, timeout=10)
