from django.urls import path

from realtime.consumers import LifecycleConsumer, SubscriberConsumer

websocket_urlpatterns = [
    path("ws/lifecycles/<str:lifecycle_id>", LifecycleConsumer.as_asgi()),
    path("ws/subscriber", SubscriberConsumer.as_asgi()),
]
