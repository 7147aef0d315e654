"""`python -m mtm.referral` runs the referral service."""

from mtm.referral.main import main

main()
