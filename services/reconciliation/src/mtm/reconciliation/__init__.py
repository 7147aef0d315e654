"""mtm reconciliation service."""
