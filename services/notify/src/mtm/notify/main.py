"""Entry point of the notify service process."""

from __future__ import annotations


def main() -> None:
    from mtm.notify.bootstrap import create_app
    from mtm.platform.runtime import serve

    serve(create_app)
