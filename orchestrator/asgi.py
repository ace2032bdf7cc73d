"""The ASGI application daphne serves, the realtime process: WebSockets, and over HTTP what holds a request
open (event streams, ``Prefer: wait``: orchestrator/urls_realtime.py)."""

import os
import pprint

from autobahn.websocket import protocol as autobahn_protocol

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
os.environ.setdefault("ORCHESTRATOR_ASGI", "1")  # its HTTP: orchestrator/urls_realtime.py

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()


class _Formatted:
    """A value pretty-printed only when it is written."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)


# autobahn pretty-prints its whole protocol configuration for a debug line on every connection, whether that
# line is written or not: ~0.27 ms of CPU per socket. Format it only when it is written.
autobahn_protocol.pformat = _Formatted
autobahn_protocol.Timings.__str__ = lambda timings: pprint.pformat(timings._timings)

from realtime.routing import websocket_urlpatterns  # noqa: E402 - needs the apps loaded

# No origin check on sockets: a customer's frontend on its own domain is the intended client, and the
# scoped token in the URL is what grants access.
application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": URLRouter(websocket_urlpatterns)})
