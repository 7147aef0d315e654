"""Inbound messages of the notify service: one module per message."""
