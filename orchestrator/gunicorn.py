"""gunicorn settings for the web process: the HTTP API, callbacks, admin, docs, health and metrics.

Why gunicorn and not daphne for HTTP: under ASGI every synchronous Django view runs on the one thread
``sync_to_async`` keeps per process, so daphne served the accept path at a third of what gunicorn's sync
workers do on the same machine (docs/performance.md). WebSockets stay on daphne (the realtime process).

Sync workers handle one request each and do not buffer slow clients: in production they sit behind a
buffering proxy that also routes ``/ws/`` to the realtime process (docker/nginx.conf). Every setting can
be changed with gunicorn's own environment variable ``GUNICORN_CMD_ARGS``.
"""

import os

from gunicorn.glogging import Logger
from prometheus_client import multiprocess

# WEB_PORT when something else takes PORT (make dev's one-origin proxy, orchestrator/front.py).
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('WEB_PORT') or os.environ.get('PORT', '8000')}"
# Two per core: a sync worker waits on PostgreSQL for part of each request.
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1)))
worker_class = "sync"
# Load the app once, in the master, and fork the workers from it: a worker that boots on its own imports all
# of Django again (~1.2 s of CPU), so after a crash on a busy host the web process was back in 47 s (4
# workers importing at once; bench.chaos), and every recycled worker (max_requests) paid it again. Nothing
# the app opens at import survives a fork unsafely: database connections open at the first request,
# redis-py's pools and prometheus_client's multiprocess values notice the new pid.
preload_app = True
timeout = 30  # a worker stuck this long is killed and replaced
graceful_timeout = 20
# Restart workers now and then, staggered, so a slow leak in any library cannot grow without bound.
max_requests = 20000
max_requests_jitter = 2000
proc_name = "orchestrator-web"
# gunicorn 27 opens a control socket in the home folder by default, one path per user: several servers on
# one host (tests, benchmarks, two deployments) would fight over it, and nothing here uses it.
control_socket_disable = True


class _NoAccessLog(Logger):
    """gunicorn's logger without an access log. With a ``logconfig_dict`` gunicorn builds every request's
    access-log fields, then hands them to a logger with no handler (4% of a web worker's samples in a profile)."""

    def access(self, resp, req, environ, request_time) -> None:
        pass


# gunicorn's own lines (worker boots, timeouts) as the JSON lines every other process writes
# (orchestrator/logs.py); no access log: the app logs what matters with its context.
accesslog = None
logger_class = _NoAccessLog
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "orchestrator.logs.JsonFormatter"},
        "plain": {"()": "orchestrator.logs.PlainFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": os.environ.get("LOG_FORMAT", "json")}},
    "loggers": {
        "gunicorn.error": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO"), "propagate": False},
        "gunicorn.access": {"handlers": [], "propagate": False},
    },
}


def child_exit(server, worker) -> None:
    """A worker's metrics files must stop counting as live once it is gone (prometheus multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
