"""mtm referral service."""
