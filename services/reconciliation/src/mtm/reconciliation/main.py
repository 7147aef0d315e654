"""Entry point of the reconciliation service process."""

from __future__ import annotations

import asyncio


def main() -> None:
    from mtm.reconciliation.bootstrap import create_app

    asyncio.run(create_app().run())
