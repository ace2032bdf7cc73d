"""The ASGI application daphne serves: HTTP (API, callbacks, admin) and WebSockets (realtime)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from realtime.routing import websocket_urlpatterns  # noqa: E402 - needs the apps loaded

# No origin check on sockets: a customer's frontend on its own domain is the intended client, and the
# scoped token in the URL is what grants access.
application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": URLRouter(websocket_urlpatterns)})
