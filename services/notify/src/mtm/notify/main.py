"""Entry point of the notify service process."""

from __future__ import annotations

import asyncio


def main() -> None:
    from mtm.notify.bootstrap import create_app

    asyncio.run(create_app().run())
