"""mtm review service."""
