from __future__ import annotations

import json

from tests.processes import poll_until

TERMINAL = {"completed", "failed", "cancelled"}


def create(api, body: dict, **headers) -> dict:
    response = api.post("/v1/lifecycles", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


def get(api, lifecycle_id: str) -> dict:
    response = api.get(f"/v1/lifecycles/{lifecycle_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_status(api, lifecycle_id: str, statuses=TERMINAL, timeout: float = 60) -> dict:
    return poll_until(
        lambda: get(api, lifecycle_id),
        lambda body: body["status"] in statuses,
        timeout=timeout,
        what=f"status in {sorted(statuses)}",
    )


def timeline(api, lifecycle_id: str) -> list[dict]:
    response = api.get(f"/v1/lifecycles/{lifecycle_id}/timeline")
    assert response.status_code == 200, response.text
    return response.json()["events"]


def scripted(scenario: str, steps: dict[str, list[str]], reply: str = "hi") -> str:
    """A prompt for the fake OpenAI server (tests/fakes/openai_server.py)."""
    return json.dumps({"scenario": scenario, "steps": steps, "reply": reply})
