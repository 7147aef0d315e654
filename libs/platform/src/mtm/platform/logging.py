"""structlog set-up: every line JSON and keyed by ids; a filter drops fields that could carry PHI.

All lines go through one handler on the root logger: mtm's own (structlog) and those of libraries (FastStream, nats,
asyncpg, uvicorn) alike, rendered by structlog's `ProcessorFormatter`. Exceptions never reach a line as text: an
exception's message can hold anything the failing code held (a row, a field of a message), so a line carries its
type (`error_type`) and its frames (file, line, function) only. A library's own line that comes with an exception
loses its message for the same reason (FastStream writes `f"{type}: {exc}"`).

`service` comes from the running service's scope (`service_scope`), bound per task, so several services in one
process (the in-process tests) each log under their own name; a process's entry point sets its default.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from contextvars import ContextVar
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
        "exception",
        "trace_id",
        "span_id",
    }
)
# A library line that comes with an exception is rendered with this instead of its own text.
FOREIGN_EXCEPTION_EVENT = "exception in a library (message withheld)"
MAX_FRAMES = 40
MAX_CHAINED = 3

_SERVICE: ContextVar[str | None] = ContextVar("mtm_service", default=None)
_process_service: str | None = None
_HANDLER_MARK = "_mtm_handler"
# FastStream's loggers print coloured text to stdout/stderr of their own and do not propagate: they are reset.
FASTSTREAM_LOGGERS = ("faststream", "faststream.access", "faststream.access.nats")
# Loggers that libraries give their own handlers and stop from propagating (uvicorn does when its default config
# ran in this process): they are brought back to the one handler.
OWN_HANDLER_LOGGERS = (*FASTSTREAM_LOGGERS, "uvicorn", "uvicorn.error", "uvicorn.access")


@contextlib.contextmanager
def service_scope(service: str) -> Iterator[None]:
    """Lines logged here, and in tasks started here, carry `service`."""
    token = _SERVICE.set(service)
    try:
        yield
    finally:
        _SERVICE.reset(token)


def set_process_service(service: str | None) -> None:
    """The service of lines logged outside any scope (a process runs one service, or the web app)."""
    global _process_service
    _process_service = service


def own_process(service: str) -> None:
    """A process's entry point: its default service, and Python's warnings as log lines (JSON like the rest)."""
    set_process_service(service)
    logging.captureWarnings(True)


def current_service() -> str | None:
    """The service of the running scope, else the process's."""
    return _SERVICE.get() or _process_service


def _add_service(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    service = current_service()
    if service is not None:
        event_dict.setdefault("service", service)
    return event_dict


def _add_trace(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # Imported here: tracing imports this module for its logger.
    from mtm.platform.tracing import current_ids

    ids = current_ids()
    if ids is not None:
        event_dict["trace_id"], event_dict["span_id"] = ids
    return event_dict


def _short_path(filename: str) -> str:
    """`mtm/platform/consumer.py`, `faststream/...`: where the code is, not where it was installed."""
    for marker in ("/site-packages/", "/src/"):
        at = filename.rfind(marker)
        if at >= 0:
            return filename[at + len(marker) :]
    return filename.rsplit("/", 2)[-1] if "/" in filename else filename


def scrubbed_exception(exc: BaseException, depth: int = 0) -> dict[str, Any]:
    """An exception as type and frames, with its causes: never its message, its arguments or local values."""
    frames = traceback.extract_tb(exc.__traceback__)[-MAX_FRAMES:]
    found: dict[str, Any] = {
        "type": type(exc).__name__,
        "frames": [f"{_short_path(f.filename)}:{f.lineno} in {f.name}" for f in frames],
    }
    chained = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if chained is not None and depth < MAX_CHAINED:
        found["cause"] = scrubbed_exception(chained, depth + 1)
    return found


def _exception_of(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and isinstance(exc_info[1], BaseException):
        return exc_info[1]
    if exc_info is True:
        return sys.exc_info()[1]
    return None


def _scrub_exception(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """`exc_info` → `error_type` and `exception` (type and frames); the exception's text is dropped."""
    exc_info = event_dict.pop("exc_info", None)
    event_dict.pop("exception", None)  # a rendered traceback (text) never goes out
    event_dict.pop("stack_info", None)
    exc = _exception_of(exc_info) if exc_info else None
    if exc is not None:
        event_dict.setdefault("error_type", type(exc).__name__)
        event_dict["exception"] = scrubbed_exception(exc)
    return event_dict


def _withhold_foreign_exception_text(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A library's line with an exception: its text is often the exception's (`f"{type}: {exc}"`)."""
    record = event_dict.get("_record")
    if record is not None and record.exc_info:
        event_dict["event"] = FOREIGN_EXCEPTION_EVENT
        event_dict["exc_info"] = record.exc_info
    return event_dict


def _drop_unlisted(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event_dict.items() if k in ALLOWED_KEYS}


def _shared() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service,
        _add_trace,
    ]


def formatter(fmt: str = "json") -> logging.Formatter:
    """The formatter every line goes through (tests attach it to a handler of their own to read the lines)."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared(), _withhold_foreign_exception_text],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _scrub_exception,
            _drop_unlisted,
            renderer,
        ],
    )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a line is written (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def configure_logging(service: str | None = None, level: str = "INFO", fmt: str = "json") -> None:
    """Route every logger through one JSON (or console) handler on stderr; `service`: the process default."""
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*_shared(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(formatter(fmt))
    handler.setLevel(numeric)
    root.addHandler(handler)
    # Libraries speak from WARNING up (httpx, aiosmtpd and the like narrate every request at INFO), unless DEBUG
    # is asked for; mtm's own loggers and FastStream's at the level asked for.
    root.setLevel(min(numeric, logging.DEBUG) if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    logging.getLogger("mtm").setLevel(numeric)
    for name in OWN_HANDLER_LOGGERS:
        library = logging.getLogger(name)
        for old in list(library.handlers):
            library.removeHandler(old)
        library.propagate = True
        if name == "faststream":
            library.setLevel(numeric)
    if service is not None:
        set_process_service(service)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
