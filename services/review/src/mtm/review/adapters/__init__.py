"""Postgres and NATS adapters of review."""
