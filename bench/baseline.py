"""The synchronous design the product replaces, for the side-by-side benchmark: frontend → backend → LLM →
response, with the request holding a worker for the whole model call. Mounted only when BENCH_BASELINE is
set (never in production)."""

from __future__ import annotations

import httpx
from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from lifecycle.services import api_key_authenticate


@csrf_exempt
@require_POST
def sync_generate(request):
    key = api_key_authenticate(raw_key=request.headers.get("Authorization", "").removeprefix("Bearer ").strip())
    if key is None:
        return JsonResponse({"error": {"code": "unauthenticated"}}, status=401)
    response = httpx.post(
        f"{settings.OPENAI_BASE_URL}/chat/completions",
        json={"model": "bench", "messages": [{"role": "user", "content": request.body.decode()}]},
        timeout=settings.PROVIDER_TIMEOUT_S,
    )
    return JsonResponse({"output": response.json()["choices"][0]["message"]["content"]})
