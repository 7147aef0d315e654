"""Entry point of the referral service process."""

from __future__ import annotations

import asyncio


def main() -> None:
    from mtm.referral.bootstrap import create_app

    asyncio.run(create_app().run())
