"""Every process rides out its dependencies restarting under it: none exits, and work submitted right after
is served as promptly as before (through webhook + callback, so the delivery process, Celery, Redis and the
whole pipeline take part)."""

from __future__ import annotations

import contextlib
import signal
import time

import httpx
import psutil
import pytest
from django.db import connection

from lifecycle.models import Lifecycle
from tests.embedded_servers import embedded_stack
from tests.lifecycle.helpers import timeline, wait_status
from tests.processes import poll_until
from tests.webhooks.helpers import endpoint, received

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def restart_redis() -> None:
    redis = embedded_stack().server("redis")
    redis.stop()
    redis.start()


def restart_postgres() -> None:
    embedded_stack().server("postgres").restart(mode="fast")
    connection.close()  # this test's own connection went with it


def submit(api, prompt: str, patience_s: float = 20) -> dict:
    """POST as a client would: a 503 while a server is away is tried again."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            response = api.post("/v1/lifecycles", json={"model": "echo/x", "prompt": prompt})
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 202:
            return response.json()
        assert time.monotonic() < deadline, response.text if response is not None else "no answer"
        time.sleep(0.2)


@pytest.mark.parametrize("restart", [restart_redis, restart_postgres], ids=["redis", "postgresql"])
def test_every_process_rides_out_a_dependency_restart(api, stack, customer_backend, restart):
    endpoint(api, customer_backend, "data")
    before = wait_status(api, submit(api, "before")["id"])
    assert before["status"] == "completed", before

    for n in range(2):  # twice: a process that only survives the first is no better
        restart()
        started = time.monotonic()
        after = wait_status(api, submit(api, f"after {n}")["id"], timeout=30)
        assert after["status"] == "completed", after
        assert after["result"] == {"enriched": f"AFTER {n}", "lifecycle_id": after["id"]}
        assert time.monotonic() - started < 20  # served by the processes themselves, not a reconciler sweep

    exited = {name: proc.returncode for name, proc in stack.procs.items() if proc.poll() is not None}
    assert exited == {}


def test_a_delivery_attempt_running_through_a_postgresql_restart_is_recorded_once_it_is_back(
    api, stack, customer_backend
):
    """The attempt ends while PostgreSQL is away: the delivery process keeps its outcome until it can record
    it, then retries on schedule; it does not exit, and the lifecycle completes."""
    _, scenario = endpoint(api, customer_backend, "hang,data")  # the first attempt hangs past its timeout
    lifecycle = submit(api, "through the restart")
    poll_until(lambda: received(customer_backend, scenario), bool, timeout=30, what="the first attempt arrived")
    restart_postgres()  # while that attempt is in flight

    done = wait_status(api, lifecycle["id"], timeout=45)
    assert done["status"] == "completed", done
    attempts = [e for e in timeline(api, lifecycle["id"]) if e["event"] == "webhook.attempt"]
    assert [a["payload"]["outcome"] for a in attempts] == ["failed", "succeeded"]
    assert stack.alive("delivery"), stack.log("delivery")[-3000:]
    after = wait_status(api, submit(api, "and after")["id"], timeout=30)
    assert after["status"] == "completed", after


# What each process logs once it is waiting the outage out where it would wait longest: the relay and the
# delivery process in their main loops (the delivery process's claims wait in db.patiently), the consumers in
# their LISTEN for the outbox (they touch PostgreSQL for nothing else while idle).
WAITING = {
    "relay": '"msg": "relay: PostgreSQL unavailable',
    "generator": '"msg": "generator: PostgreSQL (LISTEN) unavailable',
    "delivery": '"msg": "PostgreSQL unavailable',
}


@pytest.mark.parametrize("name", list(WAITING))
def test_a_process_asked_to_stop_while_postgresql_is_away_stops(stack, name):
    """SIGTERM is obeyed whatever a dependency is doing: a process waiting out an outage does not make its
    supervisor (Kubernetes, systemd, make dev) wait for the outage to end, or kill it."""
    assert stop_while_postgresql_is_away(stack, name) == [], f"{name} did not stop within 15 s of SIGTERM"


def test_a_generator_asked_to_stop_while_postgresql_is_away_leaves_its_generations_in_flight(api, stack):
    """A generation in flight could not record its outcome before the outage ends: the generator stops
    without waiting for it, and the lifecycle is taken again once its lease expires, and completes."""
    body = {"model": "echo/x", "prompt": "slow", "params": {"latency_ms": 10_000}}
    lifecycle_id = api.post("/v1/lifecycles", json=body).json()["id"]
    poll_until(
        lambda: Lifecycle.objects.get(id=lifecycle_id).status, "generating".__eq__, timeout=20, what="generating"
    )

    assert stop_while_postgresql_is_away(stack, "generator") == [], "the generator did not stop within 15 s"
    done = wait_status(api, lifecycle_id, timeout=60)
    assert done["status"] == "completed", done


def stop_while_postgresql_is_away(stack, name: str) -> list[psutil.Process]:
    """Stop PostgreSQL, SIGTERM process ``name`` once it waits the outage out, and start both again: what of
    the process had not exited 15 s after the signal."""
    postgres = embedded_stack().server("postgres")
    logged = stack.log(name).count(WAITING[name])
    process = psutil.Process(stack.procs[name].pid).children(recursive=True)  # under the Procfile's shell
    still_running: list[psutil.Process] = []
    postgres.stop()
    try:
        # One still backing off from an earlier outage (another test's restart) does not say it again, and
        # is waiting already.
        with contextlib.suppress(AssertionError):
            poll_until(
                lambda: stack.log(name).count(WAITING[name]),
                lambda count: count > logged,
                timeout=10,
                what=f"{name} waiting the outage out",
            )
        stack.signal(name, signal.SIGTERM)  # the shell goes at once; the process must follow
        _, still_running = psutil.wait_procs(process, timeout=15)
    finally:
        for leftover in still_running:
            leftover.kill()
        stack.procs[name].wait(timeout=10)
        postgres.start()
        connection.close()
        stack.start(name)
    return still_running
