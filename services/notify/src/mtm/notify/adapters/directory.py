"""The practitioner directory: practitioner id → email, webhook URL and channels.

Loaded from a JSON file (`MTM_NOTIFY_DIRECTORY_FILE`, what a hospital exports from its provider directory) and
from notify's `recipient_endpoints` table; an entry in the file wins. It is configuration, not history: only the
channels chosen for a referral are recorded (NotificationRequested), so a rebuild never needs it.

The file: `{"practitioners": [{"practitioner_id": "prac-pcp-42", "email": "lee@clinic.example",
"webhook_url": null, "channels": ["email", "nats"]}]}` (`channels` optional).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from mtm.contracts.events import NotificationChannel
from mtm.notify.domain.delivery import Contact

SELECT_CONTACTS = """
SELECT recipient_id, webhook_url, email, channels FROM recipient_endpoints WHERE recipient_id = ANY($1::text[])
"""
UPSERT_ENDPOINT = """
INSERT INTO recipient_endpoints (recipient_id, webhook_url, email, channels) VALUES ($1, $2, $3, $4)
ON CONFLICT (recipient_id) DO UPDATE
SET webhook_url = EXCLUDED.webhook_url, email = EXCLUDED.email, channels = EXCLUDED.channels
"""


class DirectoryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    practitioner_id: str = Field(min_length=1, max_length=128)
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    webhook_url: str | None = None
    channels: tuple[NotificationChannel, ...] | None = None

    def contact(self) -> Contact:
        return Contact(self.practitioner_id, self.email, self.webhook_url, self.channels)


class DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    practitioners: tuple[DirectoryEntry, ...] = ()


def load_directory_file(path: str | Path | None) -> dict[str, Contact]:
    """The file's entries by practitioner id; raises ValueError naming the entry and field that is wrong."""
    if not path:
        return {}
    parsed = DirectoryFile.model_validate_json(Path(path).read_bytes())
    return {entry.practitioner_id: entry.contact() for entry in parsed.practitioners}


class Directory:
    def __init__(self, from_file: dict[str, Contact]) -> None:
        self._file = from_file

    async def contacts(self, conn: asyncpg.Connection, practitioner_ids: Sequence[str]) -> dict[str, Contact]:
        wanted = sorted(set(practitioner_ids))
        rows = await conn.fetch(SELECT_CONTACTS, [p for p in wanted if p not in self._file])
        found = {
            r["recipient_id"]: Contact(
                r["recipient_id"], r["email"], r["webhook_url"], tuple(r["channels"]) if r["channels"] else None
            )
            for r in rows
        }
        found.update({p: self._file[p] for p in wanted if p in self._file})
        return found


async def set_contact(conn: asyncpg.Connection, contact: Contact) -> None:
    channels = list(contact.channels) if contact.channels is not None else None
    await conn.execute(UPSERT_ENDPOINT, contact.practitioner_id, contact.webhook_url, contact.email, channels)
