"""Inbound messages of the referral service: one module per message."""
