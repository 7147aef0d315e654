"""Helpers shared by mtm's integration and end-to-end tests."""
