"""Identity at the edge: a frontend calls the API with a JWT from the customer's own identity provider
(shared/ARCHITECTURE.md, Identity at the edge).

1. The token names its issuer (``iss``, read before anything is trusted); the projects' :class:`JwtIssuer`
   rows with that issuer are the candidates, and the one whose audience the token carries verifies it.
2. PyJWT checks the signature with that issuer's key only (its HS256 secret, or the key of the token's
   ``kid`` in its JWKS) and only with that key's kind of algorithm, so ``alg: none`` and an HS256 token
   signed with a public key are refused; then ``iss``, ``aud``, ``exp`` (required) and ``nbf``, with
   ``JWT_LEEWAY_S`` of clock skew.
3. The subscriber (``user_id``, ``tier``) is taken from the issuer's configured claims, and from nothing
   else: what a request body says about the subscriber is ignored for such a caller.

A JWKS is fetched through the SSRF guard (``orchestrator.ssrf``: public addresses only, TLS verified, a
small answer), cached per process for ``JWT_JWKS_CACHE_S``, and fetched again when a token names a
``kid`` it does not hold (a key rotation), at most once per ``JWT_JWKS_MIN_REFRESH_S``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import jwt
from django.conf import settings

from lifecycle.models import JwtIssuer, Project
from orchestrator import crypto, ssrf

log = logging.getLogger(__name__)

# What a JWKS key may sign with: never a symmetric algorithm (a public key is no secret).
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class InvalidToken(Exception):
    """The token does not authenticate anyone; the message says why, in words fit for the caller."""


@dataclass(frozen=True)
class Subscriber:
    """A caller authenticated by its own JWT: one user of one project."""

    project: Project
    issuer: JwtIssuer
    user_id: str
    tier: str | None

    pk = None  # no API key: nothing for a realtime token to be revoked with

    @property
    def identity(self) -> dict[str, str]:
        """The lifecycle's ``subscriber``, from the verified claims."""
        return {"user_id": self.user_id} | ({"tier": self.tier} if self.tier else {})


class OriginRefused(Exception):
    """The token is good, but its issuer does not list the browser origin the request came from."""


def authenticate_request(request, token: str) -> Subscriber:
    """The caller a JWT authenticates, from a browser origin its issuer allows (if the request has one),
    noted on the (Django) request for the CORS middleware's answer (lifecycle.cors)."""
    caller = authenticate(token)
    origin = request.headers.get("Origin")
    if origin and origin not in caller.issuer.allowed_origins:
        raise OriginRefused(f"The origin {origin[:200]} is not allowed for this token's issuer.")
    request.subscriber = caller
    return caller


def looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2 and credential.startswith("eyJ")


def authenticate(token: str) -> Subscriber:
    try:
        claimed = jwt.decode(token, options={"verify_signature": False})
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidToken("The token is malformed.") from exc
    try:
        candidates = list(JwtIssuer.objects.select_related("project").filter(issuer=str(claimed.get("iss", ""))))
    except crypto.SecretUnreadable as exc:  # a key dropped too early: say so to operators, refuse the token
        log.error("identity: an issuer's secret cannot be decrypted: %s", exc)
        raise InvalidToken("The token's issuer cannot be verified right now.") from exc
    if not candidates:
        raise InvalidToken("The token's issuer is not registered.")
    audiences = claimed.get("aud")
    audiences = {audiences} if isinstance(audiences, str) else set(audiences or ())
    issuer = next((c for c in candidates if c.audience in audiences), None)
    if issuer is None:
        raise InvalidToken("The token is not meant for this service (aud).")
    claims = _verified(token, header, issuer)
    user_id = claims.get(issuer.user_claim)
    if not isinstance(user_id, str | int) or isinstance(user_id, bool) or not str(user_id):
        raise InvalidToken(f"The token has no '{issuer.user_claim}' claim.")
    tier = claims.get(issuer.tier_claim)
    return Subscriber(
        project=issuer.project,
        issuer=issuer,
        user_id=str(user_id)[:200],
        tier=str(tier)[:50] if isinstance(tier, str | int) and not isinstance(tier, bool) and str(tier) else None,
    )


def _verified(token: str, header: dict, issuer: JwtIssuer) -> dict:
    if issuer.secret:
        key, algorithms = issuer.secret, ["HS256"]
    else:
        jwk = _key(issuer.jwks_url, header.get("kid"))
        key = jwk
        algorithms = [jwk.algorithm_name] if jwk.algorithm_name in ASYMMETRIC else list(ASYMMETRIC)
    try:
        return jwt.decode(
            token,
            key=key,
            algorithms=algorithms,
            audience=issuer.audience,
            issuer=issuer.issuer,
            leeway=settings.JWT_LEEWAY_S,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("The token has expired.") from exc
    except jwt.ImmatureSignatureError as exc:
        raise InvalidToken("The token is not valid yet (nbf).") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"The token has no '{exc.claim}' claim.") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken("The token's signature or claims do not verify.") from exc


class _Keys:
    """The JWKS of one URL, as this process last fetched it."""

    def __init__(self) -> None:
        self.by_kid: dict[str | None, jwt.PyJWK] = {}
        self.fetched_at = float("-inf")
        self.lock = threading.Lock()


_jwks: dict[str, _Keys] = {}
_jwks_lock = threading.Lock()


def _key(url: str, kid: str | None) -> jwt.PyJWK:
    with _jwks_lock:
        keys = _jwks.setdefault(url, _Keys())
    with keys.lock:
        age = time.monotonic() - keys.fetched_at
        stale = age > settings.JWT_JWKS_CACHE_S
        unknown = kid not in keys.by_kid and (kid is not None or len(keys.by_kid) != 1)
        if stale or (unknown and age > settings.JWT_JWKS_MIN_REFRESH_S):
            _fetch(url, keys)
        if kid is None and len(keys.by_kid) == 1:  # a JWKS of one key may be used without a kid
            return next(iter(keys.by_kid.values()))
        if kid not in keys.by_kid:
            raise InvalidToken("The token's key (kid) is not in its issuer's JWKS.")
        return keys.by_kid[kid]


def _fetch(url: str, keys: _Keys) -> None:
    try:
        document = ssrf.get_json(url, timeout=settings.JWT_JWKS_TIMEOUT_S)
        found = jwt.PyJWKSet.from_dict(document).keys
    except (ssrf.TargetRefused, ssrf.FetchFailed, jwt.PyJWTError, AttributeError, TypeError) as exc:
        log.warning("identity: could not fetch the JWKS at %s: %s", url, exc)
        keys.fetched_at = time.monotonic() - settings.JWT_JWKS_CACHE_S + settings.JWT_JWKS_MIN_REFRESH_S
        if not keys.by_kid:
            raise InvalidToken("The token's issuer keys could not be fetched.") from exc
        return  # keep the keys we had: the provider may be away for a moment
    keys.by_kid = {key.key_id: key for key in found}
    keys.fetched_at = time.monotonic()
