"""WSGI entry point. The service runs on daphne (ASGI); this serves the synchronous baseline of the
benchmarks (bench/) the way a naive deployment would, under gunicorn's sync workers."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

application = get_wsgi_application()
