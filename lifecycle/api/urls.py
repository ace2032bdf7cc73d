from django.urls import path

from lifecycle.api import views

urlpatterns = [
    path("lifecycles", views.LifecycleListCreateView.as_view(), name="lifecycle-list"),
    path("lifecycles/<uuid:lifecycle_id>", views.LifecycleDetailView.as_view(), name="lifecycle-detail"),
    path("lifecycles/<uuid:lifecycle_id>/timeline", views.LifecycleTimelineView.as_view(), name="lifecycle-timeline"),
    path("lifecycles/<uuid:lifecycle_id>/cancel", views.LifecycleCancelView.as_view(), name="lifecycle-cancel"),
    path("lifecycles/<uuid:lifecycle_id>/replay", views.LifecycleReplayView.as_view(), name="lifecycle-replay"),
    path("usage", views.UsageView.as_view(), name="usage"),
    path("jwt-issuers", views.JwtIssuerListCreateView.as_view(), name="jwt-issuer-list"),
    path("jwt-issuers/<uuid:issuer_id>", views.JwtIssuerDetailView.as_view(), name="jwt-issuer-detail"),
]
