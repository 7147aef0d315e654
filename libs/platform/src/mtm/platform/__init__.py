"""Plumbing shared by mtm services."""
