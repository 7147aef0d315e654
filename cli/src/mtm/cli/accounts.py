"""`mtm login` and `mtm user add|list`: who the CLI acts as, and the web app's accounts."""

from __future__ import annotations

import rich_click as click

from mtm.cli import output
from mtm.cli.errors import Denied, Refused, Unavailable, UsageError
from mtm.cli.output import json_option
from mtm.cli.params import PRACTITIONER


@click.command("login")
@click.argument("user", help="The account's name, e.g. ana.")
@click.option("--url", help="The web app (default: MTM_WEB_URL, else the stack `mtm up` started).")
@json_option
def login(user: str, url: str | None, as_json: bool) -> int:
    """Sign in at the web app (password from MTM_PASSWORD or the prompt); commands then act as you."""
    from mtm.cli.identity import LoginError, Unreachable, read_password, token_file
    from mtm.cli.identity import login as sign_in

    try:
        who = sign_in(user, read_password(), url)
    except Unreachable as exc:
        raise Unavailable(str(exc)) from exc
    except LoginError as exc:
        raise Denied(f"login refused: {exc}") from exc
    if as_json:
        output.print_json(
            {
                "user_id": who.user_id,
                "role": who.role,
                "practitioner_id": who.practitioner_id,
                "expires_at": who.expires_at,
                "token_file": str(token_file()),
            }
        )
        return 0
    practitioner = f", practitioner {who.practitioner_id}" if who.practitioner_id else ""
    output.line(
        f"logged in as {who.user_id} ({who.role}{practitioner}) until {who.expires_at}; token in {token_file()}"
    )
    return 0


@click.group("user")
def user() -> None:
    """Accounts of the web app (in its database: MTM_WEB_DATABASE_URL, else mtm_web on the stack's Postgres)."""


@user.command("add")
@click.argument("name", help="The account's name (letters, digits, '.', '_', '@', '-').")
@click.option(
    "--role", type=click.Choice(["pharmacist", "physician", "admin"]), required=True, help="What the account may do."
)
@click.option("--practitioner-id", type=PRACTITIONER, help="FHIR Practitioner id (required for a physician).")
@json_option
def user_add(name: str, role: str, practitioner_id: str | None, as_json: bool) -> int:
    """Add an account (password from MTM_PASSWORD or standard input, at least 8 characters)."""
    from mtm.cli.identity import Unreachable, add_user, read_password
    from mtm.web.accounts import AccountError, validate_account

    try:
        validate_account(name, role, practitioner_id)
    except AccountError as exc:
        raise UsageError(str(exc)) from exc
    password = read_password("Password for the new account: ")
    if len(password) < 8:
        raise UsageError("a password needs at least 8 characters")
    try:
        add_user(name, role, practitioner_id, password)
    except Unreachable as exc:
        raise Unavailable(str(exc)) from exc
    except AccountError as exc:
        raise Refused(str(exc)) from exc
    if as_json:
        output.print_json({"user_id": name, "role": role, "practitioner_id": practitioner_id})
    else:
        output.line(f"account {name} added ({role})")
    return 0


@user.command("list")
@json_option
def user_list(as_json: bool) -> int:
    """Every account, with its role."""
    from mtm.cli.identity import Unreachable, list_users

    try:
        accounts = list_users()
    except Unreachable as exc:
        raise Unavailable(str(exc)) from exc
    if as_json:
        output.print_json(accounts)
        return 0
    output.table(
        ("User", "Role", "Practitioner", "Disabled"),
        ((a["user_id"], a["role"], a["practitioner_id"], a["disabled"]) for a in accounts),
        empty="no accounts",
    )
    return 0


COMMANDS = (login, user)
