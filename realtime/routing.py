from django.urls import path

from realtime.consumers import LifecycleConsumer

websocket_urlpatterns = [
    path("ws/lifecycles/<str:lifecycle_id>", LifecycleConsumer.as_asgi()),
]
