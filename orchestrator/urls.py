from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from compat import views as compat_views
from console import views as console_views
from orchestrator import errors, health
from realtime import views as realtime_views

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("v1/", include("lifecycle.api.urls")),
    path("v1/", include("webhooks.api.urls")),
    path("v1/", include("realtime.api.urls")),
    path("v1/models", compat_views.models, name="models"),
    path("v1/models/<path:model>", compat_views.models, name="model"),
    path("v1/chat/completions", compat_views.served_elsewhere, name="chat-completions"),
    path("v1/schema", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
    path(
        "docs",
        SpectacularSwaggerView.as_view(url_name="schema", authentication_classes=[], permission_classes=[]),
        name="docs",
    ),
    path("admin/overview/", admin.site.admin_view(console_views.overview), name="console-overview"),
    path("admin/", admin.site.urls),
    path("demo/", realtime_views.demo, name="demo"),
    # Unknown API paths answer JSON even with DEBUG on (whose 404 page is HTML).
    re_path(r"^v1/", errors.not_found),
]

handler404 = "orchestrator.errors.not_found"
handler500 = "orchestrator.errors.server_error"

if settings.BENCH_BASELINE:  # the synchronous baseline of bench/, never in production
    from bench.baseline import naive_enqueue, sync_generate

    urlpatterns.insert(0, path("bench/sync-generate", sync_generate))
    urlpatterns.insert(0, path("bench/naive-enqueue", naive_enqueue))
