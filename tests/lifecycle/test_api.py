"""The lifecycle REST API over HTTP against the running web process."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from rest_framework.renderers import JSONRenderer

from lifecycle.api.serializers import LifecycleAcceptedSerializer
from lifecycle.models import Lifecycle
from tests.conftest import api_client, make_project
from tests.lifecycle.helpers import create, wait_status

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert {"code", "message", "details"} <= set(body["error"])
    return body["error"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"prompt": "no model"}, "model"),
        ({"model": "nosuch/model", "prompt": "x"}, "model"),
        ({"model": "echo", "prompt": "x"}, "model"),
        ({"model": "echo/x"}, "non_field_errors"),
        ({"model": "echo/x", "prompt": "x", "messages": [{"role": "user", "content": "y"}]}, "non_field_errors"),
        ({"model": "echo/x", "messages": "not a list"}, "messages"),
        ({"model": "echo/x", "messages": [{"role": "wizard", "content": "y"}]}, "messages"),
        ({"model": "echo/x", "messages": [{"role": "user", "content": 42}]}, "messages"),
        ({"model": "echo/x", "prompt": "x", "params": {"latency_ms": "soon"}}, "params"),
        ({"model": "echo/x", "prompt": "x", "params": []}, "params"),
        ({"model": "echo/x", "prompt": "x", "fallbacks": ["nosuch/m"]}, "fallbacks"),
        ({"model": "echo/x", "prompt": "x", "metadata": "tag"}, "metadata"),
        ({"model": "echo/x", "prompt": "x", "metadata": {"blob": "x" * 20000}}, "metadata"),
        ({"model": "echo/x", "prompt": "x", "subscriber": {"tier": "gold"}}, "subscriber"),
        ({"model": "echo/x", "prompt": "x", "delivery": {"mode": "carrier-pigeon"}}, "delivery"),
        ({"model": "echo/x", "prompt": "x", "response_format": {"type": "json_schema"}}, "response_format"),
        (
            {"model": "echo/x", "prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"type": 7}}},
            "response_format",
        ),
    ],
)
def test_invalid_bodies_get_a_400_naming_the_field_and_record_nothing(api, body, field):
    error = error_of(api.post("/v1/lifecycles", json=body), 400)

    assert error["code"] == "invalid_request"
    assert field in error["details"]
    assert not Lifecycle.objects.exists()


@pytest.mark.parametrize(
    "raw",
    [b'{"model": ', b"[1, 2, 3]", b"null", b'{"model": "echo/x", "prompt": "\\ud800"}', b"NaN", b"\xff\xfe"],
)
def test_malformed_json_is_a_400(api, raw):
    response = api.post("/v1/lifecycles", content=raw, headers={"Content-Type": "application/json"})

    assert error_of(response, 400)["code"] == "invalid_request"


def test_a_body_over_the_limit_is_a_413(api):
    response = api.post("/v1/lifecycles", json={"model": "echo/x", "prompt": "x" * (1024 * 1024 + 1)})

    assert error_of(response, 413)["code"] == "payload_too_large"


def test_a_non_json_content_type_is_a_415(api):
    response = api.post("/v1/lifecycles", content=b"model=echo/x", headers={"Content-Type": "text/plain"})

    assert error_of(response, 415)["code"] == "unsupported_media_type"


def test_the_202_body_is_what_the_accepted_serializer_documents(api):
    response = api.post("/v1/lifecycles", json={"model": "echo/x", "prompt": "x"})

    assert response.status_code == 202
    body = response.json()
    lifecycle = Lifecycle.objects.get(id=body["id"])
    documented = LifecycleAcceptedSerializer(
        {
            "id": lifecycle.id,
            "status": "pending",
            "created_at": lifecycle.created_at,
            "ws_token": body["ws_token"],
            "links": body["links"],
        }
    ).data
    assert body == json.loads(JSONRenderer().render(documented))
    assert body["created_at"].endswith("Z") and body["ws_token"]


def test_requests_without_a_valid_key_are_401(stack, project_key):
    for headers in ({}, {"Authorization": "Bearer lk_000000000000_nope"}, {"Authorization": "Basic abc"}):
        response = httpx.post(
            f"{stack.base_url}/v1/lifecycles", json={"model": "echo/x", "prompt": "x"}, headers=headers
        )
        assert error_of(response, 401)["code"] == "unauthenticated"


def test_the_same_idempotency_key_and_body_return_the_first_lifecycle(api):
    body = {"model": "echo/x", "prompt": "once"}

    first = create(api, body, **{"Idempotency-Key": "order-1"})
    again = create(api, body, **{"Idempotency-Key": "order-1"})

    assert again["id"] == first["id"]
    assert Lifecycle.objects.filter(project=api.project).count() == 1


def test_the_same_idempotency_key_with_another_body_is_a_409(api):
    create(api, {"model": "echo/x", "prompt": "once"}, **{"Idempotency-Key": "order-2"})

    response = api.post(
        "/v1/lifecycles", json={"model": "echo/x", "prompt": "twice"}, headers={"Idempotency-Key": "order-2"}
    )

    assert error_of(response, 409)["code"] == "conflict"
    assert Lifecycle.objects.filter(project=api.project).count() == 1


def test_another_projects_lifecycle_is_not_found_on_every_endpoint(api, stack):
    theirs = create(api, {"model": "echo/x", "prompt": "private"})
    _, other_key = make_project("other tenant")

    with api_client(stack, other_key) as other:
        for method, path in [
            ("GET", ""),
            ("GET", "/timeline"),
            ("POST", "/cancel"),
            ("POST", "/replay"),
        ]:
            response = other.request(method, f"/v1/lifecycles/{theirs['id']}{path}")
            assert error_of(response, 404)["code"] == "not_found", path
        assert other.get("/v1/lifecycles").json()["results"] == []


def test_an_unknown_id_is_a_404(api):
    assert error_of(api.get(f"/v1/lifecycles/{uuid.uuid4()}"), 404)["code"] == "not_found"
    assert error_of(api.get("/v1/lifecycles/not-a-uuid"), 404)["code"] == "not_found"


def test_list_filters_by_status_and_metadata_and_pages_with_a_cursor(api):
    done = [create(api, {"model": "echo/x", "prompt": f"n{i}", "metadata": {"batch": "a"}}) for i in range(3)]
    other = create(api, {"model": "echo/x", "prompt": "b", "metadata": {"batch": "b"}})
    for lifecycle in [*done, other]:
        wait_status(api, lifecycle["id"])

    page = api.get("/v1/lifecycles", params={"metadata[batch]": "a", "status": "completed", "limit": 2}).json()
    assert len(page["results"]) == 2
    rest = api.get(page["next"]).json()
    ids = [r["id"] for r in page["results"] + rest["results"]]
    assert sorted(ids) == sorted(d["id"] for d in done)
    assert rest["next"] is None

    assert api.get("/v1/lifecycles", params={"status": "pending"}).json()["results"] == []
    assert error_of(api.get("/v1/lifecycles", params={"status": "bogus"}), 400)["code"] == "invalid_request"
    assert error_of(api.get("/v1/lifecycles", params={"created_after": "yesterday"}), 400)


def test_replay_creates_a_new_lifecycle_from_the_same_input_linked_to_the_original(api):
    original = create(api, {"model": "echo/x", "prompt": "again", "metadata": {"k": "v"}})
    wait_status(api, original["id"])

    response = api.post(f"/v1/lifecycles/{original['id']}/replay")

    assert response.status_code == 202, response.text
    replay = wait_status(api, response.json()["id"])
    assert replay["id"] != original["id"]
    assert replay["replay_of"] == original["id"]
    assert replay["output"] == "again"
    assert replay["metadata"] == {"k": "v"}


def test_the_openapi_schema_and_docs_are_served(stack):
    schema = httpx.get(f"{stack.base_url}/v1/schema", headers={"Accept": "application/json"})
    assert schema.status_code == 200
    assert "/v1/lifecycles" in schema.json()["paths"]
    assert httpx.get(f"{stack.base_url}/docs").status_code == 200


def test_over_the_project_rate_limit_requests_get_429_with_retry_after(api):
    api.project.rate_limit_per_s = 3
    api.project.save()

    statuses = [api.get("/v1/lifecycles").status_code for _ in range(8)]

    assert statuses.count(429) >= 1, statuses
    limited = api.get("/v1/lifecycles")
    if limited.status_code == 200:  # the window rolled over; exhaust the new one
        for _ in range(4):
            limited = api.get("/v1/lifecycles")
    assert error_of(limited, 429)["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
