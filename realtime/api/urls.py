from django.urls import path

from realtime import sse
from realtime.api import views

urlpatterns = [
    path("realtime/tokens", views.RealtimeTokenView.as_view(), name="realtime-token"),
    path("lifecycles/<uuid:lifecycle_id>/events", sse.served_elsewhere, name="lifecycle-events"),
]
