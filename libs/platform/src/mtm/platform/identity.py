"""Actor tokens: short-lived EdDSA JWTs issued at login, verified by every service before it acts on a command."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from mtm.contracts.identity import TOKEN_AUDIENCE, Actor, Role

ALGORITHM = "EdDSA"
ISSUER = "mtm"
DEFAULT_TTL = timedelta(minutes=15)
# Clocks of the issuing web app and of a service may disagree by this much.
LEEWAY_S = 30


class Unauthorized(Exception):
    """No token, or one that is not ours, not whole or no longer valid; the message says which, never the token."""


class Forbidden(Exception):
    """A valid token whose role may not do what was asked."""


def generate_keypair() -> tuple[str, str]:
    """A new Ed25519 signing key and its public key, both PEM."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


class TokenIssuer:
    """Signs actor tokens; only the login front door (the web app) holds the private key."""

    def __init__(self, private_key_pem: str, *, ttl: timedelta = DEFAULT_TTL) -> None:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("actor tokens are signed with an Ed25519 key")
        self._key = key
        self._ttl = ttl

    def issue(self, actor: Actor, *, now: datetime | None = None, ttl: timedelta | None = None) -> str:
        issued = now or datetime.now(UTC)
        claims = {
            "iss": ISSUER,
            "aud": TOKEN_AUDIENCE,
            "sub": actor.user_id,
            "role": actor.role,
            "iat": issued,
            "nbf": issued,
            "exp": issued + (ttl or self._ttl),
            "jti": str(uuid.uuid4()),
        }
        if actor.practitioner_id:
            claims["practitioner_id"] = actor.practitioner_id
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)


class TokenVerifier:
    """Verifies actor tokens against the issuers' public keys (several, so a key can be rotated)."""

    def __init__(self, public_keys_pem: Iterable[str]) -> None:
        keys = []
        for pem in public_keys_pem:
            key = serialization.load_pem_public_key(pem.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("actor tokens are verified with Ed25519 public keys")
            keys.append(key)
        self._keys = tuple(keys)

    def verify(self, authorization: str | None) -> Actor:
        """The actor of an `Authorization: Bearer <token>` header; raises Unauthorized."""
        if not self._keys:
            raise Unauthorized("this service has no key to verify actors with (MTM_ACTOR_PUBLIC_KEYS)")
        if not authorization:
            raise Unauthorized("no actor token: log in first (mtm login)")
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or not token:
            raise Unauthorized("the actor token must be sent as `Bearer <token>`")
        last: Exception | None = None
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],
                    audience=TOKEN_AUDIENCE,
                    issuer=ISSUER,
                    leeway=LEEWAY_S,
                    options={"require": ["exp", "iat", "sub", "aud", "iss"]},
                )
            except jwt.ExpiredSignatureError as exc:
                raise Unauthorized("the actor token has expired: log in again") from exc
            except jwt.InvalidTokenError as exc:
                last = exc
                continue
            try:
                return Actor(
                    user_id=claims["sub"], role=claims.get("role"), practitioner_id=claims.get("practitioner_id")
                )
            except ValidationError as exc:
                raise Unauthorized("the actor token names no valid user and role") from exc
        raise Unauthorized(f"the actor token is not valid ({type(last).__name__})")


def require_role(actor: Actor, roles: Iterable[Role]) -> None:
    allowed = tuple(roles)
    if actor.role not in allowed:
        raise Forbidden(f"a {actor.role} may not do this (needs {' or '.join(allowed)})")
