"""Identity at the edge: frontends call the API with JWTs from the project's own identity provider
(lifecycle/identity.py). Tokens are minted here with PyJWT and keys made with cryptography; the JWKS is
served by a real process (tests/fakes/jwks_server.py), fetched by the stack through the SSRF guard."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import httpx
import jwt
import openai
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm

from tests.lifecycle.helpers import create, wait_status
from tests.processes import poll_until
from tests.realtime.helpers import collect, refused, ws_url

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

SECRET = "a-shared-secret-of-at-least-32-characters"
ORIGIN = "https://app.example.com"


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks(*keys: tuple[str, object]) -> dict:
    return {
        "keys": [RSAAlgorithm.to_jwk(k.public_key(), as_dict=True) | {"kid": kid, "alg": "RS256"} for kid, k in keys]
    }


def claims(issuer: str, audience: str = "orchestrator", **extra) -> dict:
    now = int(time.time())
    return {"iss": issuer, "aud": audience, "sub": "user-1", "tier": "enterprise", "iat": now, "exp": now + 300} | extra


def register(api, **fields) -> dict:
    response = api.post("/v1/jwt-issuers", json={"audience": "orchestrator", **fields})
    assert response.status_code == 201, response.text
    return response.json()


def as_user(stack, token: str, **headers) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token}", **headers}, timeout=15)


@pytest.fixture
def hs_issuer(api):
    issuer = f"https://idp-{uuid.uuid4().hex[:8]}.example.com/"
    register(api, issuer=issuer, secret=SECRET, allowed_origins=[ORIGIN])
    return issuer


def test_a_users_jwt_creates_lifecycles_as_that_user_whatever_the_body_says(stack, api, hs_issuer):
    token = jwt.encode(claims(hs_issuer), SECRET, algorithm="HS256")
    with as_user(stack, token) as user:
        forged = {"user_id": "someone-else", "tier": "free"}
        lifecycle = create(user, {"model": "echo/x", "prompt": "mine", "subscriber": forged})
        final = wait_status(user, lifecycle["id"])

    assert final["status"] == "completed" and final["output"] == "mine"
    assert final["subscriber"] == {"user_id": "user-1", "tier": "enterprise"}
    assert "delivery" not in final and "params" not in final  # the project's, not the user's
    assert lifecycle["ws_token"]


def test_a_user_sees_only_its_own_lifecycles(stack, api, hs_issuer):
    theirs = create(api, {"model": "echo/x", "prompt": "theirs", "subscriber": {"user_id": "user-2"}})
    token = jwt.encode(claims(hs_issuer), SECRET, algorithm="HS256")
    with as_user(stack, token) as user:
        mine = create(user, {"model": "echo/x", "prompt": "mine"})

        assert user.get(f"/v1/lifecycles/{theirs['id']}").status_code == 404
        assert user.post(f"/v1/lifecycles/{theirs['id']}/cancel").status_code == 404
        assert [item["id"] for item in user.get("/v1/lifecycles").json()["results"]] == [mine["id"]]
        assert user.get(f"/v1/lifecycles/{mine['id']}").status_code == 200
        # What is the project's to see or do stays behind its API key.
        assert user.get(f"/v1/lifecycles/{mine['id']}/timeline").status_code == 403
        assert user.post(f"/v1/lifecycles/{mine['id']}/replay").status_code == 403
        assert user.get("/v1/webhook-endpoints").status_code == 403
        assert user.get("/v1/jwt-issuers").status_code == 403
        assert user.post("/v1/realtime/tokens", json={"user_id": "user-2"}).status_code == 403
        assert user.post("/v1/realtime/tokens", json={"lifecycle_id": theirs["id"]}).status_code == 404
        assert user.post("/v1/realtime/tokens", json={"user_id": "user-1"}).status_code == 201


@pytest.mark.parametrize(
    "case",
    ["expired", "not yet valid", "another issuer", "another audience", "wrong secret", "alg none", "no exp", "no sub"],
)
def test_tokens_that_do_not_verify_are_refused(stack, api, hs_issuer, case):
    now = int(time.time())
    body = {
        "expired": claims(hs_issuer, exp=now - 120),  # past the 30 s leeway
        "not yet valid": claims(hs_issuer, nbf=now + 120),
        "another issuer": claims("https://elsewhere.example.com/"),
        "another audience": claims(hs_issuer, audience="someone-else"),
        "wrong secret": claims(hs_issuer),
        "alg none": claims(hs_issuer),
        "no exp": {k: v for k, v in claims(hs_issuer).items() if k != "exp"},
        "no sub": {k: v for k, v in claims(hs_issuer).items() if k != "sub"},
    }[case]
    if case == "alg none":
        token = jwt.encode(body, None, algorithm="none")
    else:
        key = "another-secret-of-at-least-32-characters!" if case == "wrong secret" else SECRET
        token = jwt.encode(body, key, algorithm="HS256")

    with as_user(stack, token) as user:
        response = user.post("/v1/lifecycles", json={"model": "echo/x", "prompt": "no"})

    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthenticated"
    assert api.get("/v1/lifecycles").json()["results"] == []


def test_a_jwks_issuer_verifies_rs256_follows_a_key_rotation_and_refuses_key_confusion(stack, api, jwks_server):
    name = f"/{uuid.uuid4().hex}"
    old, new = rsa_key(), rsa_key()
    httpx.put(f"{jwks_server}{name}", json=jwks(("old", old))).raise_for_status()
    issuer = f"https://idp-{uuid.uuid4().hex[:8]}.example.com/"
    register(api, issuer=issuer, jwks_url=f"{jwks_server}{name}", user_claim="uid", tier_claim="plan")

    token = jwt.encode(claims(issuer, uid="u-42", plan="free"), old, algorithm="RS256", headers={"kid": "old"})
    with as_user(stack, token) as user:
        lifecycle = create(user, {"model": "echo/x", "prompt": "rs256"})
        assert wait_status(user, lifecycle["id"])["subscriber"] == {"user_id": "u-42", "tier": "free"}

    # The provider rotates: a token with the new kid makes the service fetch the JWKS again.
    httpx.put(f"{jwks_server}{name}", json=jwks(("old", old), ("new", new))).raise_for_status()
    rotated = jwt.encode(claims(issuer, uid="u-42"), new, algorithm="RS256", headers={"kid": "new"})
    with as_user(stack, rotated) as user:
        poll_until(
            lambda: user.post("/v1/lifecycles", json={"model": "echo/x", "prompt": "new key"}).status_code,
            lambda status: status == 202,  # once JWT_JWKS_MIN_REFRESH_S (1 s here) has passed
            timeout=10,
            interval=0.5,
            what="a token signed with the rotated key accepted",
        )

    # HS256 signed with the public key the JWKS publishes: the classic confusion, refused.
    public_pem = old.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    confused = hs256_by_hand(claims(issuer, uid="x"), public_pem, kid="old")
    with as_user(stack, confused) as user:
        assert user.post("/v1/lifecycles", json={"model": "echo/x", "prompt": "confused"}).status_code == 401


def hs256_by_hand(body: dict, key: bytes, kid: str) -> str:
    """An HS256 token made without PyJWT, which (rightly) refuses to sign HMAC with a public key."""

    def segment(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = f"{segment(json.dumps(header).encode())}.{segment(json.dumps(body).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{segment(signature)}"


def test_a_jwks_url_on_a_private_address_is_never_fetched(stack, api):
    issuer = f"https://idp-{uuid.uuid4().hex[:8]}.example.com/"
    register(api, issuer=issuer, jwks_url="http://169.254.169.254/latest/meta-data/jwks")
    key = rsa_key()
    token = jwt.encode(claims(issuer), key, algorithm="RS256", headers={"kid": "k"})

    with as_user(stack, token) as user:
        response = user.post("/v1/lifecycles", json={"model": "echo/x", "prompt": "no"})

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "The token's issuer keys could not be fetched."


def test_browsers_get_cors_only_for_the_origins_the_issuer_allows(stack, api, hs_issuer):
    token = jwt.encode(claims(hs_issuer), SECRET, algorithm="HS256")
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}

    allowed = httpx.options(f"{stack.base_url}/v1/lifecycles", headers=preflight)
    other = httpx.options(f"{stack.base_url}/v1/lifecycles", headers=preflight | {"Origin": "https://evil.example"})
    assert allowed.status_code == 204 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in other.headers

    with as_user(stack, token, Origin=ORIGIN) as user:
        created = user.post("/v1/lifecycles", json={"model": "echo/x", "prompt": "from the browser"})
    assert created.status_code == 202 and created.headers["access-control-allow-origin"] == ORIGIN
    with as_user(stack, token, Origin="https://evil.example") as user:
        refused = user.post("/v1/lifecycles", json={"model": "echo/x", "prompt": "from elsewhere"})
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
    # A project API key is not for browsers: no CORS, even from an allowed origin.
    assert "access-control-allow-origin" not in api.get("/v1/lifecycles", headers={"Origin": ORIGIN}).headers


def test_each_user_is_rate_limited_on_its_own(stack, api):
    issuer = f"https://idp-{uuid.uuid4().hex[:8]}.example.com/"
    register(api, issuer=issuer, secret=SECRET, rate_limit_per_user_s=2)
    chatty = jwt.encode(claims(issuer, sub="chatty"), SECRET, algorithm="HS256")
    quiet = jwt.encode(claims(issuer, sub="quiet"), SECRET, algorithm="HS256")

    with as_user(stack, chatty) as user:
        statuses = [user.get("/v1/lifecycles").status_code for _ in range(6)]
    with as_user(stack, quiet) as user:
        assert user.get("/v1/lifecycles").status_code == 200

    assert 429 in statuses and statuses.count(200) >= 2


def test_the_openai_sdk_with_a_users_jwt_completes_as_that_user(stack, api, hs_issuer):
    token = jwt.encode(claims(hs_issuer, sub="sdk-user"), SECRET, algorithm="HS256")
    base_url = f"http://127.0.0.1:{stack.env['REALTIME_PORT']}/v1"
    with openai.OpenAI(base_url=base_url, api_key=token, timeout=30) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="echo/x", messages=[{"role": "user", "content": "hi"}], user="forged"
        )
    lifecycle = api.get(f"/v1/lifecycles/{raw.headers['x-lifecycle-id']}").json()

    assert raw.parse().choices[0].message.content == "hi"
    assert lifecycle["subscriber"] == {"user_id": "sdk-user", "tier": "enterprise"}
    with (
        openai.OpenAI(base_url=base_url, api_key=token + "x", max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError),
    ):
        sdk.chat.completions.create(model="echo/x", messages=[{"role": "user", "content": "hi"}])


def test_issuers_are_managed_with_the_api_key_and_never_show_their_secret(api):
    issuer = f"https://idp-{uuid.uuid4().hex[:8]}.example.com/"
    created = register(api, issuer=issuer, secret=SECRET)

    assert created["has_secret"] is True and "secret" not in created
    assert api.get(f"/v1/jwt-issuers/{created['id']}").json()["user_claim"] == "sub"
    again = api.post("/v1/jwt-issuers", json={"issuer": issuer, "audience": "orchestrator", "secret": SECRET})
    assert again.status_code == 409
    both = api.post(
        "/v1/jwt-issuers", json={"issuer": "x", "audience": "y", "secret": SECRET, "jwks_url": "https://x/jwks"}
    )
    assert both.status_code == 400
    short = api.post("/v1/jwt-issuers", json={"issuer": "x", "audience": "y", "secret": "short"})
    assert short.status_code == 400
    bad_origin = api.post(
        "/v1/jwt-issuers", json={"issuer": "x", "audience": "y", "secret": SECRET, "allowed_origins": ["https://a/b"]}
    )
    assert bad_origin.status_code == 400
    patched = api.patch(f"/v1/jwt-issuers/{created['id']}", json={"jwks_url": "https://idp.example.com/jwks"})
    assert patched.status_code == 200 and patched.json()["has_secret"] is False
    renamed = api.patch(f"/v1/jwt-issuers/{created['id']}", json={"issuer": issuer + "v2", "tier_claim": "plan"})
    assert renamed.status_code == 200 and renamed.json()["issuer"] == issuer + "v2"
    assert api.delete(f"/v1/jwt-issuers/{created['id']}").status_code == 204
    assert api.get(f"/v1/jwt-issuers/{created['id']}").status_code == 404


def test_a_users_token_streams_its_own_lifecycle_and_no_one_elses(stack, api, hs_issuer):
    theirs = create(api, {"model": "echo/x", "prompt": "theirs", "subscriber": {"user_id": "user-2"}})
    token = jwt.encode(claims(hs_issuer), SECRET, algorithm="HS256")
    with as_user(stack, token) as user:
        mine = create(user, {"model": "echo/x", "prompt": "streamed", "params": {"latency_ms": 300}})
        subscriber_token = user.post("/v1/realtime/tokens", json={"user_id": "user-1"}).json()["token"]

    messages, close_code = collect(ws_url(stack, mine["id"], mine["ws_token"]))
    assert messages[-1]["event"] == "lifecycle.completed" and messages[-1]["result"] == "streamed"
    assert close_code == 1000
    # The token opens that lifecycle only; the user's subscriber token, that user's lifecycles only.
    assert refused(ws_url(stack, theirs["id"], mine["ws_token"])) in (403, 404)
    assert refused(ws_url(stack, theirs["id"], subscriber_token)) in (403, 404)


BROWSER_CALL = """
async ([api, token, prompt]) => {
  const response = await fetch(`${api}/v1/lifecycles`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "echo/x", prompt, params: { latency_ms: 300 } }),
  });
  const created = await response.json();
  const { LifecycleSocket } = await import("/static/realtime/lifecycle-client.js");
  return await new Promise((resolve) => {
    new LifecycleSocket({
      url: created.links.websocket,
      token: created.ws_token,
      onCompleted: (result) => resolve({ status: response.status, result, lifecycle: created.id }),
      onFailed: (error) => resolve({ status: response.status, error }),
    }).connect();
  });
}
"""


@pytest.mark.browser
def test_a_browser_on_an_allowed_origin_submits_and_streams_with_its_users_jwt(stack, api, browser_page):
    """The page is served from ``localhost``, the API called on ``127.0.0.1``: another origin, so the
    browser enforces CORS for real."""
    port = stack.env["PORT"]
    app_origin = f"http://localhost:{port}"
    issuer = f"https://idp-{uuid.uuid4().hex[:8]}.example.com/"
    register(api, issuer=issuer, secret=SECRET, allowed_origins=[app_origin])
    token = jwt.encode(claims(issuer, sub="browser-user"), SECRET, algorithm="HS256")
    browser_page.goto(f"{app_origin}/demo/")

    seen = browser_page.evaluate(BROWSER_CALL, [f"http://127.0.0.1:{port}", token, "from a browser"])

    assert seen["status"] == 202 and seen["result"] == "from a browser"
    assert api.get(f"/v1/lifecycles/{seen['lifecycle']}").json()["subscriber"]["user_id"] == "browser-user"
    # The same page with a token whose issuer does not list its origin: refused before anything is written,
    # and readable by the page (another issuer lists the origin), so it can say why.
    elsewhere = f"https://idp-{uuid.uuid4().hex[:8]}.example.com/"
    register(api, issuer=elsewhere, secret=SECRET, allowed_origins=["https://app.example.com"])
    other = jwt.encode(claims(elsewhere), SECRET, algorithm="HS256")
    failed = browser_page.evaluate(
        """async ([api, token]) => {
          const response = await fetch(`${api}/v1/lifecycles`, { method: "POST",
            headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
            body: JSON.stringify({ model: "echo/x", prompt: "no" }) });
          return response.status;
        }""",
        [f"http://127.0.0.1:{port}", other],
    )
    assert failed == 403
    assert [item["subscriber"].get("user_id") for item in api.get("/v1/lifecycles").json()["results"]] == [
        "browser-user"
    ]
