from django.urls import path

from webhooks.api import views

urlpatterns = [
    path("webhook-endpoints", views.EndpointListCreateView.as_view(), name="endpoint-list"),
    path("webhook-endpoints/<uuid:endpoint_id>", views.EndpointDetailView.as_view(), name="endpoint-detail"),
    path(
        "webhook-endpoints/<uuid:endpoint_id>/rotate-secret",
        views.EndpointRotateSecretView.as_view(),
        name="endpoint-rotate-secret",
    ),
    path("webhook-endpoints/<uuid:endpoint_id>/recover", views.EndpointRecoverView.as_view(), name="endpoint-recover"),
    path("lifecycles/<uuid:lifecycle_id>/deliveries", views.LifecycleDeliveriesView.as_view(), name="deliveries"),
    path("lifecycles/<uuid:lifecycle_id>/callback", views.CallbackView.as_view(), name="callback"),
    path("deliveries/<uuid:delivery_id>/resend", views.DeliveryResendView.as_view(), name="delivery-resend"),
]
