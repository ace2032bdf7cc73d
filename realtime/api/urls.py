from django.urls import path

from realtime.api import views

urlpatterns = [path("realtime/tokens", views.RealtimeTokenView.as_view(), name="realtime-token")]
