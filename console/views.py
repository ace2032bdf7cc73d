"""The console's own pages beside Django admin's: the overview."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import reverse

from console import overview as figures


def overview(request):
    """The last hour (or ``?window=15m|1h|6h|24h``) at a glance, each figure linking to its lifecycles."""
    if not request.user.has_perm("lifecycle.view_lifecycle"):
        raise PermissionDenied
    window = figures.Window.parse(request.GET.get("window"))
    context = {
        **admin.site.each_context(request),
        "title": "Overview",
        "window": window,
        "windows": list(figures.WINDOWS),
        "throughput": figures.throughput(window),
        "steps": figures.steps(window),
        "failures": figures.failures(window),
        "endpoints": figures.endpoints(window),
        "waiting": figures.waiting(),
        "lag": figures.consumer_lag(),
        "lifecycles": reverse("admin:lifecycle_lifecycle_changelist"),
    }
    return TemplateResponse(request, "admin/console/overview.html", context)
