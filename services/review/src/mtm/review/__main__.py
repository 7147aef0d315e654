"""`python -m mtm.review` runs the review service."""

from mtm.review.main import main

main()
