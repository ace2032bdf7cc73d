"""The ASGI application daphne serves, the realtime process: WebSockets, and over HTTP what holds a request
open (event streams, ``Prefer: wait``: orchestrator/urls_realtime.py)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
os.environ.setdefault("ORCHESTRATOR_ASGI", "1")  # its HTTP: orchestrator/urls_realtime.py

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from realtime.routing import websocket_urlpatterns  # noqa: E402 - needs the apps loaded

# No origin check on sockets: a customer's frontend on its own domain is the intended client, and the
# scoped token in the URL is what grants access.
application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": URLRouter(websocket_urlpatterns)})
