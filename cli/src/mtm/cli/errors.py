"""What can go wrong for the person at the terminal, each with its exit code; printed as one line, no traceback.

Exit codes of every `mtm` command:

| code | meaning |
|---|---|
| 0 | done |
| 1 | refused: not found, conflict, denied (not logged in, wrong password, another role's command), invalid content |
| 2 | usage: an unknown command or option, a missing argument, a bad id, date or file name |
| 3 | unavailable: NATS, a service, the web app or the database does not answer (is the stack up?) |
"""

from __future__ import annotations

OK = 0
REFUSED = 1
USAGE = 2
UNAVAILABLE = 3
# What a Unix tool dies with when the reader of its output went away (`mtm tasks | head`): 128 + SIGPIPE.
BROKEN_PIPE = 141
INTERRUPTED = 130


class CliError(Exception):
    """Something the person at the terminal must know or fix; the message says what, without PHI."""

    exit_code = REFUSED


class Refused(CliError):
    """Not found, conflict, invalid content: the request was understood and turned down."""


class Denied(CliError):
    """Not logged in, a refused sign-in, a role that may not do this."""


class UsageError(CliError):
    """The command line itself is wrong (found after parsing, e.g. options that do not go together)."""

    exit_code = USAGE


class Unavailable(CliError):
    """What the command needs does not answer: NATS, a service, the web app, the database."""

    exit_code = UNAVAILABLE


# Reply outcomes (`mtm.contracts.CommandReply.outcome`) → exit code: `error` is the service failing, not the asker.
OUTCOME_EXIT = {
    "accepted": OK,
    "not_found": REFUSED,
    "conflict": REFUSED,
    "invalid": REFUSED,
    "unauthorized": REFUSED,
    "forbidden": REFUSED,
    "error": UNAVAILABLE,
}
