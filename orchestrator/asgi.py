"""The ASGI application daphne serves: HTTP (API, callbacks, admin) and, as realtime grows, WebSockets."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

application = ProtocolTypeRouter({"http": django_asgi_app})
