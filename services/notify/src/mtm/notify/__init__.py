"""mtm notify service."""
