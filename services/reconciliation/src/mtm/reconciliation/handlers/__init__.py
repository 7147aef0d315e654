"""Inbound messages of the reconciliation service: one module per message."""
