"""Postgres and NATS adapters of referral."""
