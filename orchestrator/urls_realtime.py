"""What the realtime process (daphne) serves over HTTP besides its WebSockets: what holds a request open,
as a coroutine rather than a thread. nginx and ``make dev``'s front route these here; everything else is
the web process's (orchestrator/urls.py)."""

from django.urls import path, re_path

from compat import views as compat_views
from lifecycle.api import views as lifecycle_views
from orchestrator import errors, health
from realtime import sse
from realtime.waiting import waiting

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("v1/lifecycles", waiting(lifecycle_views.LifecycleListCreateView.as_view()), name="lifecycle-list"),
    path(
        "v1/lifecycles/<uuid:lifecycle_id>",
        waiting(lifecycle_views.LifecycleDetailView.as_view()),
        name="lifecycle-detail",
    ),
    path("v1/lifecycles/<uuid:lifecycle_id>/events", sse.lifecycle_events, name="lifecycle-events"),
    path("v1/chat/completions", compat_views.chat_completions, name="chat-completions"),
    # Served by the web process behind nginx or the front; here too, for a client pointed at this process.
    path("v1/models", compat_views.models, name="models"),
    path("v1/models/<path:model>", compat_views.models, name="model"),
    re_path(r"", errors.not_found),
]

handler404 = "orchestrator.errors.not_found"
handler500 = "orchestrator.errors.server_error"
