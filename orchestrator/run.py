"""``make dev``: the whole service on one machine.

1. Start the embedded PostgreSQL, Redis and Kafka for each URL not set in the environment.
2. Migrate, and create the demo project on first run (its key is kept in the state folder).
3. Run every process of the Procfile, with their output multiplexed here; one that exits is restarted with
   backoff (:mod:`orchestrator.supervisor`), the rest keep running. In front of them, on ``PORT``, a small
   proxy (:mod:`orchestrator.front`) routes ``/ws/`` to the realtime process and the rest to the web
   process (on ``WEB_PORT``), so HTTP and WebSockets share one origin as they do behind nginx.
4. Print the API key and URLs once the web and realtime processes are ready.
5. On Ctrl-C or SIGTERM stop the processes, then the servers.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from honcho.environ import parse_procfile

from orchestrator.embedded import DEFAULT_STATE_DIR, PROJECT_DIR, EmbeddedStack, running, unconfigured
from orchestrator.supervisor import Supervisor

DEMO_PROJECT_FILE = "demo-project.json"
# The embedded broker keeps its log in memory and spends more CPU per message as it grows (docs/embedded.md).
BROKER_MAX_MESSAGES = int(os.environ.get("EMBEDDED_KAFKA_MAX_MESSAGES", "20000"))
BROKER_CHECK_S = 30
REPUBLISH_S = 60


def _manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=env, check=True, capture_output=True, text=True
    ).stdout


def _demo_project(env: dict[str, str], state_dir: Path) -> dict:
    """The demo project and an admin login, made on first run and kept (mode 600) in the state folder."""
    path = state_dir / DEMO_PROJECT_FILE
    if path.exists():
        demo = json.loads(path.read_text())
        if "admin_password" in demo:
            return demo
    else:
        demo = json.loads(_manage(env, "createproject", "demo"))
    demo["admin_password"] = secrets.token_urlsafe(12)
    _manage({**env, "DJANGO_SUPERUSER_PASSWORD": demo["admin_password"]}, "ensureadmin", "--username", "admin")
    path.write_text(json.dumps(demo))
    path.chmod(0o600)
    return demo


def bound_broker_log(stack: EmbeddedStack, env: dict[str, str], stop: threading.Event) -> None:
    """Keep the embedded broker's log bounded: once it has taken ``BROKER_MAX_MESSAGES`` messages since it
    started, restart it empty and have the relay publish again the recent messages of lifecycles still under
    way (``manage.py republishrecent``). Every process rides out the restart in place; consumers are
    idempotent, so what they had handled already is a no-op. Runs until ``stop``."""
    import psycopg

    broker = stack.server("kafka")
    since = time.time()
    while not stop.wait(BROKER_CHECK_S):
        try:
            with psycopg.connect(env["DATABASE_URL"], connect_timeout=5) as conn:
                (published,) = conn.execute(
                    "SELECT count(*) FROM lifecycle_outboxmessage WHERE published_at > to_timestamp(%s)", [since]
                ).fetchone()
            if published < BROKER_MAX_MESSAGES:
                continue
            print(f"-- the embedded broker took {published} messages: restarting it empty to bound its log", flush=True)
            broker.stop()
            broker.start()
            since = time.time()
            print(f"-- {_manage(env, 'republishrecent', '--seconds', str(REPUBLISH_S)).strip()}", flush=True)
        except Exception as exc:  # the database away, a slow restart: try again next time
            print(f"-- bounding the broker's log failed this time: {exc}", flush=True)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _announce_when_ready(ports: dict[str, int], demo: dict, base_url: str, ws_url: str) -> None:
    deadline = time.monotonic() + 120
    waiting = dict(ports)
    while waiting and time.monotonic() < deadline:
        waiting = {name: port for name, port in waiting.items() if not _ready(port)}
        time.sleep(0.5)
    if waiting:
        print(f"!! {', '.join(waiting)} did not become ready in 120 s; see the output above", flush=True)
        return
    print(
        "\n".join(
            [
                "",
                "=" * 72,
                " AI lifecycle orchestrator is up",
                f"   API      {base_url}/v1/lifecycles",
                f"   Docs     {base_url}/docs",
                f"   Admin    {base_url}/admin/  (admin / {demo['admin_password']})",
                f"   Demo     {base_url}/demo/  (paste the API key below)",
                f"   Sockets  {ws_url}/ws/lifecycles/{{id}}  (links.websocket)",
                f"   Health   {base_url}/readyz",
                f"   Project  {demo['project_id']}",
                f"   API key  {demo['api_key']}",
                "",
                " Try it:",
                f"   curl -s -X POST {base_url}/v1/lifecycles \\",
                f"     -H 'Authorization: Bearer {demo['api_key']}' -H 'Content-Type: application/json' \\",
                """     -d '{"model": "echo/demo", "prompt": "Hello, lifecycle"}'""",
                "=" * 72,
                "",
            ]
        ),
        flush=True,
    )


def main() -> int:
    state_dir = Path(os.environ.get("STATE_DIR", DEFAULT_STATE_DIR)).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    port = int(os.environ.get("PORT", "8000"))
    realtime_port = int(os.environ.get("REALTIME_PORT", port + 1))  # the settings' default too
    web_port = int(os.environ.get("WEB_PORT", port + 2))
    print(f"starting the embedded servers in {state_dir} ...", flush=True)
    started = time.monotonic()
    all_embedded = all(unconfigured().values())
    with running(EmbeddedStack.for_environment(state_dir=state_dir)) as stack:
        # Every process writes its metrics here and the web process adds them up (orchestrator/metrics.py).
        metrics_dir = state_dir / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir()
        env = {
            **os.environ,
            **stack.environ(),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            # The settings see server URLs now; the embedded stack is still a development setup.
            "DEBUG": os.environ.get("DEBUG", "true" if all_embedded else "false"),
            "STATE_DIR": str(state_dir),
            "PORT": str(port),
            "REALTIME_PORT": str(realtime_port),
            "WEB_PORT": str(web_port),
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        print(f"servers up in {time.monotonic() - started:.1f}s: {', '.join(stack.environ().values())}", flush=True)
        _manage(env, "migrate", "--noinput")
        demo = _demo_project(env, state_dir)
        base_url = os.environ.get("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}").rstrip("/")
        # One origin: sockets on PORT too (through the front), with or without PUBLIC_BASE_URL.
        env.setdefault("PUBLIC_WS_URL", base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1))
        ws_url = _manage(
            env, "shell", "--no-imports", "-c", "from django.conf import settings; print(settings.PUBLIC_WS_URL)"
        ).strip()
        ports = {"web": port, "realtime": realtime_port}
        threading.Thread(target=_announce_when_ready, args=(ports, demo, base_url, ws_url), daemon=True).start()

        supervisor = Supervisor(env=env, cwd=PROJECT_DIR)
        supervisor.add("front", f"{sys.executable} -m orchestrator.front")
        for name, command in parse_procfile((PROJECT_DIR / "Procfile").read_text()).processes.items():
            supervisor.add(name, command)
        if stack.kafka:
            threading.Thread(target=bound_broker_log, args=(stack, env, supervisor.stopping), daemon=True).start()
        code = supervisor.run()
        print("processes stopped; stopping the embedded servers ...", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
