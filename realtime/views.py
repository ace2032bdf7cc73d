from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_GET


@require_GET
def demo(request):
    """A page to try the service: submit a prompt, watch the lifecycle live over the WebSocket."""
    return render(request, "realtime/demo.html")
