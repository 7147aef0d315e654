"""Entry point of the review service process."""

from __future__ import annotations

import asyncio


def main() -> None:
    from mtm.review.bootstrap import create_app

    asyncio.run(create_app().run())
