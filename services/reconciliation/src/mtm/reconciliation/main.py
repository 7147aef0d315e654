"""Entry point of the reconciliation service process."""

from __future__ import annotations


def main() -> None:
    from mtm.platform.runtime import serve
    from mtm.reconciliation.bootstrap import create_app

    serve(create_app)
