"""Where the stack `mtm up` runs lives: its data directory, and the NATS URL it left there for the other commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import platformdirs


def data_dir() -> Path:
    return Path(os.environ.get("MTM_DATA_DIR") or platformdirs.user_data_dir("mtm"))


def stack_file() -> Path:
    return data_dir() / "stack.json"


def stack_value(key: str) -> str | None:
    """What the running `mtm up` left in stack.json (`nats_url`, `database_url`, `web_url`), if anything."""
    try:
        value = json.loads(stack_file().read_text())[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(value) if value else None


def nats_url() -> str:
    """Where tools find NATS: MTM_NATS_URL, else the stack `mtm up` started, else the default port."""
    return os.environ.get("MTM_NATS_URL") or stack_value("nats_url") or "nats://127.0.0.1:4222"
