"""The ``openai`` npm package, unchanged, as a client: sync, streaming, concurrent, and its error classes
(tests/compat/node/client.mjs, its version pinned in package-lock.json)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.compat.test_chat_completions import base_url

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

NODE_DIR = Path(__file__).parent / "node"
NODE, NPM = shutil.which("node"), shutil.which("npm")


@pytest.fixture(scope="session")
def node_client():
    if NODE is None or NPM is None:
        pytest.skip("Node.js and npm are not installed")
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300)
    return NODE_DIR / "client.mjs"


def test_the_openai_npm_package_works_unchanged(node_client, stack, api):
    key = api.headers["Authorization"][7:]
    run = subprocess.run(
        [NODE, str(node_client), base_url(stack), key], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr

    seen = json.loads(run.stdout)
    assert seen["content"] == "hello from node" and seen["object"] == "chat.completion"
    assert seen["id"] == f"chatcmpl-{seen['lifecycleId']}"
    assert api.get(f"/v1/lifecycles/{seen['lifecycleId']}").json()["status"] == "completed"
    assert "".join(seen["pieces"]) == "streamed to node in pieces" and len(seen["pieces"]) > 1
    assert seen["usage"]["total_tokens"] == seen["usage"]["prompt_tokens"] + seen["usage"]["completion_tokens"]
    assert seen["many"] == [f"node {i}" for i in range(20)]
    assert seen["error"] == {"isNotFound": True, "status": 404, "code": "model_not_found"}
