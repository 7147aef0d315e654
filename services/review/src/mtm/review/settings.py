"""Settings of the review service."""

from __future__ import annotations

from pydantic import Field

from mtm.platform.settings import ServiceSettings


class ReviewSettings(ServiceSettings):
    service: str = "review"
    review_kb_path: str | None = Field(
        default=None, description="Directory of a site's knowledge base in the bundled format (MTM_REVIEW_KB_PATH)."
    )
    review_timer_every_s: float = Field(
        default=5.0,
        gt=0,
        description="How often review looks for passed deadlines and scheduled reviews (MTM_REVIEW_TIMER_EVERY_S).",
    )
