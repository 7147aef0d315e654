"""Where the stack `mtm up` runs lives: its data directory, and how the other commands reach its NATS and web app."""

from __future__ import annotations

import json
import os
from pathlib import Path

import platformdirs

from mtm.platform.connection import NatsClient
from mtm.platform.settings import NatsSettings


def data_dir() -> Path:
    return Path(os.environ.get("MTM_DATA_DIR") or platformdirs.user_data_dir("mtm"))


def stack_file() -> Path:
    return data_dir() / "stack.json"


def write_stack_file(client: NatsClient, **values: str) -> None:
    """What the other `mtm` commands need to reach the running stack (owner only): its NATS, as the CLI's user,
    and `values` (`web_url`, `web_database_url`: the web app's accounts database as the web app's role)."""
    path = stack_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    body = {"nats_url": client.url, "nats": {**client.model_dump(mode="json"), "password": _secret(client)}, **values}
    with os.fdopen(descriptor, "w") as handle:
        json.dump(body, handle)


def _secret(client: NatsClient) -> str | None:
    return client.password.get_secret_value() if client.password is not None else None


def stack_value(key: str) -> str | None:
    """What the running `mtm up` left in stack.json (`nats_url`, `web_url`, `web_database_url`), if anything."""
    try:
        value = json.loads(stack_file().read_text())[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(value) if value else None


def nats_client() -> NatsClient:
    """How tools reach NATS: `MTM_NATS_URL` (with `MTM_NATS_USER`, `MTM_NATS_PASSWORD`, `MTM_NATS_TLS_CA`, …),
    else the stack `mtm up` started (as its `cli` user), else the default port."""
    from_environment = NatsSettings()
    if os.environ.get("MTM_NATS_URL"):
        return from_environment.nats()
    try:
        return NatsClient.model_validate(json.loads(stack_file().read_text())["nats"])
    except (OSError, ValueError, KeyError, TypeError):
        return from_environment.nats()
