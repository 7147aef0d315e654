"""Entry point of the referral service process."""

from __future__ import annotations


def main() -> None:
    from mtm.platform.runtime import serve
    from mtm.referral.bootstrap import create_app

    serve(create_app)
