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


def nats_url() -> str:
    """Where tools find NATS: MTM_NATS_URL, else the stack `mtm up` started, else the default port."""
    if url := os.environ.get("MTM_NATS_URL"):
        return url
    try:
        return str(json.loads(stack_file().read_text())["nats_url"])
    except (OSError, ValueError, KeyError):
        return "nats://127.0.0.1:4222"
