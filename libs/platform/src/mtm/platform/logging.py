"""structlog set-up: JSON lines keyed by ids; a filter drops fields that could carry PHI."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

# Only these keys may reach a log line; names, birth dates and free text never do.
ALLOWED_KEYS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "logger",
        "service",
        "event_id",
        "event_type",
        "patient_ref",
        "correlation_id",
        "causation_id",
        "task_id",
        "referral_id",
        "notification_id",
        "command_id",
        "consumer",
        "group",
        "groups",
        "stream",
        "subject",
        "stream_seq",
        "deliveries",
        "count",
        "applied",
        "duplicates",
        "parked",
        "published",
        "outcome",
        "reason_code",
        "error_type",
        "attempt",
        "status_code",
        "channel",
        "url",
        "port",
        "pid",
        "database",
        "migration",
        "elapsed_ms",
        "exc_info",
        "exception",
    }
)


def _drop_unlisted(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event_dict.items() if k in ALLOWED_KEYS}


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_unlisted,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
