"""Entry point of the program service process."""

from __future__ import annotations


def main() -> None:
    from mtm.platform.runtime import serve
    from mtm.program.bootstrap import create_app

    serve(create_app)
