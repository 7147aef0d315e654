"""The development stack: embedded NATS and Postgres, testcontainers, and the lock and pid files `mtm up` keeps."""
