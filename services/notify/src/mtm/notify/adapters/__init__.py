"""Postgres and NATS adapters of notify."""
