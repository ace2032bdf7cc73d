"""schemathesis against the live API's own OpenAPI schema, with a real API key: every generated request,
valid or not, must get a documented status, no 5xx, and a body that matches the schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.timeout(900)
def test_schemathesis_finds_nothing_against_the_api(stack, project_key, tmp_path):
    project, api_key = project_key
    project.rate_limit_per_s = 100_000  # the fuzzer's pace is not what this test is about
    project.save()
    schemathesis = Path(sys.executable).parent / "schemathesis"
    command = [
        str(schemathesis), "--config-file", str(CONFIG), "run", f"{stack.base_url}/v1/schema",
        "--header", f"Authorization: Bearer {api_key}",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", "25",
        "--workers", "1",  # hypothesis's lambda descriptions are not thread-safe on 3.11
        "--seed", "1",
        "--request-timeout", "10",
    ]  # fmt: skip
    run = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )

    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
