"""Postgres adapters of the program service."""
