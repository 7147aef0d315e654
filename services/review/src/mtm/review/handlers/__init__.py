"""Inbound messages of the review service: one module per message."""
