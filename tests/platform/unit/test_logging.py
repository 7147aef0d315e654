"""Log lines: JSON from every logger, ids only, and no exception text (it can carry anything the code held)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import pytest

from mtm.platform.logging import configure_logging, formatter, get_logger, service_scope, set_process_service

pytestmark = pytest.mark.unit

MARKER = "Quillonia-Zyxwarden-1931-07-14"


class Lines(logging.Handler):
    """Every line as the process would write it (the same formatter), kept for the test to read."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(formatter("json"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def parsed(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def lines() -> Iterator[Lines]:
    configure_logging(None, "INFO", "json")
    set_process_service(None)
    handler = Lines()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def _fail(text: str) -> None:
    raise ValueError(f"could not store {text}")


def test_an_exception_is_logged_by_type_and_frames_never_its_text(lines: Lines) -> None:
    log = get_logger("mtm.test")
    try:
        try:
            _fail(MARKER)
        except ValueError as exc:
            raise RuntimeError(f"while handling {MARKER}") from exc
    except RuntimeError:
        log.exception("batch handling failed", consumer="review-x", name=MARKER)
    (line,) = lines.parsed()
    assert MARKER not in lines.lines[0]
    assert line["event"] == "batch handling failed" and line["consumer"] == "review-x"
    assert line["error_type"] == "RuntimeError"
    assert line["exception"]["type"] == "RuntimeError"
    assert line["exception"]["cause"]["type"] == "ValueError"
    assert any("in _fail" in frame for frame in line["exception"]["cause"]["frames"])
    assert "name" not in line  # not on the allowlist


@pytest.mark.parametrize("logger", ["faststream.access.nats", "asyncio", "uvicorn.error", "some.library"])
def test_a_library_line_with_an_exception_loses_its_text(lines: Lines, logger: str) -> None:
    """FastStream logs `f"{type}: {exc}"` with the exception; asyncio and uvicorn put it in the message too."""
    try:
        _fail(MARKER)
    except ValueError as exc:
        logging.getLogger(logger).error("ValueError: could not store %s", MARKER, exc_info=exc)
    (line,) = lines.parsed()
    assert MARKER not in lines.lines[0]
    assert line["logger"] == logger and line["level"] == "error"
    assert line["error_type"] == "ValueError" and line["exception"]["frames"]


def test_library_lines_are_json_with_the_same_keys(lines: Lines) -> None:
    logging.getLogger("faststream").warning("FastStream app starting...")
    (line,) = lines.parsed()
    assert line["event"] == "FastStream app starting..." and line["logger"] == "faststream"
    assert set(line) <= {"event", "level", "timestamp", "logger", "service"}


async def test_service_is_the_scope_of_the_task_that_logs(lines: Lines) -> None:
    """Two services in one process each log under their own name, also from tasks they started."""
    log = get_logger("mtm.test")

    async def work() -> None:
        await asyncio.sleep(0)
        log.info("pulled")

    tasks = []
    for service in ("reconciliation", "review"):
        with service_scope(service):
            tasks.append(asyncio.create_task(work()))
    log.info("outside")
    await asyncio.gather(*tasks)
    found = [(line["event"], line.get("service")) for line in lines.parsed()]
    assert found == [("outside", None), ("pulled", "reconciliation"), ("pulled", "review")]
