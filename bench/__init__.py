"""mtm benchmarks: figures side by side with raw NATS and Postgres limits measured in the same run."""
