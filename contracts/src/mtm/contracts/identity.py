"""Who acts: the verified actor of every human command, carried as a signed token beside the command."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from mtm.contracts.envelope import Frozen

Role = Literal["pharmacist", "physician", "admin"]
ACTOR_TOKEN_HEADER = "Authorization"
"""NATS header of a command or query: `Bearer <token>`, a short-lived JWT (EdDSA) issued at login."""
TOKEN_AUDIENCE = "mtm"


ACTOR_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"
"""User and practitioner ids: no NUL, control characters, spaces, `*` or `>`: they go into queries and onto the
log, where such a character would make the event unstorable in every projection that keeps who acted."""


class Actor(Frozen):
    """A person as a verified token names them; services take identity from here, never from a command's body."""

    user_id: str = Field(min_length=1, max_length=128, pattern=ACTOR_ID_PATTERN)
    role: Role
    practitioner_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=ACTOR_ID_PATTERN,
        description="FHIR Practitioner id (physicians' referrals are addressed to it).",
    )

    @property
    def acting_as(self) -> str:
        """The id recorded on events: the practitioner id when the account has one, else the account."""
        return self.practitioner_id or self.user_id


def bearer(token: str) -> dict[str, str]:
    """The headers that carry a token with a command or query."""
    return {ACTOR_TOKEN_HEADER: f"Bearer {token}"}
