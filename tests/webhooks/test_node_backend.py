"""The Node customer backend of docs/examples/node-backend, run as it is: the standardwebhooks npm package
verifies our webhooks unchanged, and its callback completes the lifecycle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import httpx
import pytest

from orchestrator.embedded import PROJECT_DIR, free_port
from tests.lifecycle.helpers import create, wait_status

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

EXAMPLE = PROJECT_DIR / "docs" / "examples" / "node-backend"
NODE, NPM = shutil.which("node"), shutil.which("npm")


@pytest.fixture
def node_backend(api):
    """The example, listening with the secret of an endpoint registered for it; yields its URL."""
    if NODE is None or NPM is None:
        pytest.skip("Node.js and npm are not installed")
    if not (EXAMPLE / "node_modules" / "standardwebhooks").is_dir():
        subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE, check=True, timeout=300)
    port = free_port()
    url = f"http://127.0.0.1:{port}/ai-hooks"
    hook = api.post("/v1/webhook-endpoints", json={"url": url})
    assert hook.status_code == 201, hook.text
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "WEBHOOK_SECRET": hook.json()["secret"]}
    process = subprocess.Popen([NODE, "server.mjs"], cwd=EXAMPLE, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(process.stdout.readline()) == {"listening": port}
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_node_backend_verifies_the_webhook_and_its_callback_completes_the_lifecycle(api, node_backend):
    lifecycle = create(api, {"model": "echo/x", "prompt": "hello from the orchestrator"})
    final = wait_status(api, lifecycle["id"])

    assert final["status"] == "completed", final
    assert final["result"] == {"answer": "hello from the orchestrator", "words": 4, "reviewed_by": "node-backend"}


def test_the_node_backend_refuses_what_we_did_not_sign(node_backend):
    body = json.dumps({"type": "lifecycle.generated", "data": {}})
    forged = {
        "webhook-id": "msg_forged",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1,bm90IG91ciBzaWduYXR1cmU=",
    }
    assert httpx.post(node_backend, content=body, headers=forged).status_code == 400
