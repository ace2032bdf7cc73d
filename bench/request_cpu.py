"""The CPU one accepted request costs the API: ``POST /v1/lifecycles`` through Django's whole stack (middleware,
DRF, authentication, the rate limit, the insert and its transaction) with Django's test client, in this
process, and what its PostgreSQL backend spends on it. No HTTP server and no pipeline run, so the figure is
the view's own, steady enough to compare two trees side by side where the cpu scenario's whole-stack
figure moves more with the host than with a change to one process.

    python -m bench.request_cpu [--requests 3000] [--warmup 300]

Starts fresh embedded PostgreSQL and Redis, with production settings (bench/environment.py). Prints one JSON
object: µs of CPU per request in this process (``client_us``) and in its database backend (``postgres_us``),
and the wall time per request.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import psutil

from bench.cpu import process_seconds
from bench.environment import PRODUCTION_ON_LOOPBACK
from orchestrator.embedded import PROJECT_DIR, EmbeddedStack, running

STATE_DIR = PROJECT_DIR / ".state" / "bench-request-cpu"


def measure(requests: int, warmup: int) -> dict:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from lifecycle.services import project_create

    call_command("migrate", verbosity=0)
    _, key = project_create(name="request-cpu")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    body = json.dumps({"model": "echo/bench", "prompt": "hi", "delivery": {"mode": "direct"}})

    def post() -> None:
        response = client.post("/v1/lifecycles", data=body, content_type="application/json")
        assert response.status_code == 202, (response.status_code, response.content[:300])

    for _ in range(warmup):
        post()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = psutil.Process(cursor.fetchone()[0])
    me = psutil.Process()
    client_before, backend_before, started = process_seconds(me), process_seconds(backend), time.perf_counter()
    for _ in range(requests):
        post()
    return {
        "requests": requests,
        "client_us": round(1e6 * (process_seconds(me) - client_before) / requests),
        "postgres_us": round(1e6 * (process_seconds(backend) - backend_before) / requests),
        "wall_us": round(1e6 * (time.perf_counter() - started) / requests),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    with running(EmbeddedStack.on_free_ports(Path(STATE_DIR), kafka=False, ephemeral=True)) as servers:
        os.environ.update(
            {
                **servers.environ(),
                **PRODUCTION_ON_LOOPBACK,
                "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",  # the view only writes the outbox
                "RATE_LIMIT_PER_S": "1000000",
                "ALLOWED_HOSTS": "testserver",
                "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
            }
        )
        print(json.dumps(measure(args.requests, args.warmup)))
    shutil.rmtree(STATE_DIR, ignore_errors=True)


if __name__ == "__main__":
    main()
