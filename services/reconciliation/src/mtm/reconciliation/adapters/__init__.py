"""Postgres and NATS adapters of reconciliation."""
