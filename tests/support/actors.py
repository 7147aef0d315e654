"""Actor tokens for tests: one signing key per test run, the way the web app signs for people who log in."""

from __future__ import annotations

from mtm.contracts.identity import Actor, Role, bearer
from mtm.platform.identity import TokenIssuer, generate_keypair

PRIVATE_KEY, PUBLIC_KEY = generate_keypair()
ISSUER = TokenIssuer(PRIVATE_KEY)


def token(user_id: str, role: Role, practitioner_id: str | None = None) -> str:
    return ISSUER.issue(Actor(user_id=user_id, role=role, practitioner_id=practitioner_id))


def headers(user_id: str, role: Role, practitioner_id: str | None = None) -> dict[str, str]:
    return bearer(token(user_id, role, practitioner_id))


def pharmacist(practitioner_id: str) -> dict[str, str]:
    return headers(practitioner_id, "pharmacist", practitioner_id)


def physician(practitioner_id: str) -> dict[str, str]:
    return headers(f"user-{practitioner_id}", "physician", practitioner_id)


def __getattr__(name: str) -> dict[str, str]:
    # `actors.ADMIN` is signed when asked for: a token minted at import expires 15 minutes into the run, and a
    # test that uses it after a slow stretch of the suite was refused "the actor token has expired".
    if name == "ADMIN":
        return headers("ops", "admin")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
