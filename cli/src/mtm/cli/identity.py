"""Actor tokens for the CLI: the dev stack's signing key, `mtm login`, and the token every command sends.

Services act only on commands that carry a verified actor token. In production the web app issues tokens to
people who log in; for the local stack `mtm up` makes a signing key under its data directory, and
`mtm login` signs a token with it for the account named (the web app's accounts replace this).
"""

from __future__ import annotations

import base64
import os
from datetime import timedelta
from pathlib import Path

from mtm.cli.stack import data_dir
from mtm.contracts.identity import Actor, Role
from mtm.platform.identity import TokenIssuer, generate_keypair

CLI_TOKEN_TTL = timedelta(hours=8)


def keys_dir() -> Path:
    return data_dir() / "keys"


def public_key_file() -> Path:
    return keys_dir() / "actor-signing.pub.pem"


def ensure_dev_keys() -> Path:
    """The local stack's token signing key (made once, private key readable by this user only)."""
    folder = keys_dir()
    private, public = folder / "actor-signing.pem", public_key_file()
    if not private.exists() or not public.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_pem, public_pem = generate_keypair()
        private.touch(mode=0o600)
        private.write_text(private_pem)
        public.write_text(public_pem)
    return public


def ensure_key_encryption_key() -> Path:
    """The local stack's key-encryption key (reconciliation wraps patients' event keys with it), made once."""
    path = keys_dir() / "key-encryption-key"
    if not path.exists():
        keys_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)
        path.write_text(base64.b64encode(os.urandom(32)).decode())
    return path


def dev_issuer() -> TokenIssuer:
    private = keys_dir() / "actor-signing.pem"
    if not private.exists():
        raise FileNotFoundError("no local signing key: start the stack once with `mtm up`")
    return TokenIssuer(private.read_text(), ttl=CLI_TOKEN_TTL)


def token_file() -> Path:
    return data_dir() / "token"


def login(user_id: str, role: Role, practitioner_id: str | None) -> str:
    token = dev_issuer().issue(Actor(user_id=user_id, role=role, practitioner_id=practitioner_id))
    path = token_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(token)
    return token


def current_token() -> str | None:
    """`MTM_TOKEN`, else the token `mtm login` saved."""
    if token := os.environ.get("MTM_TOKEN"):
        return token
    try:
        return token_file().read_text().strip() or None
    except OSError:
        return None
