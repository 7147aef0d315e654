"""Entry point of the review service process."""

from __future__ import annotations


def main() -> None:
    from mtm.platform.runtime import serve
    from mtm.review.bootstrap import create_app

    serve(create_app)
