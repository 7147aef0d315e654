"""Every event's current model by name, and the upcasters that turn any stored older version into it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import ValidationError

from mtm.contracts.envelope import EventEnvelope

E = TypeVar("E", bound=EventEnvelope)
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Takes a stored event of version n as a JSON object and returns it as version n + 1 (envelope and data)."""


class UnknownEvent(ValueError):
    """The body names an event type (or a version) this registry cannot read."""


def event_name_of(event_type: str) -> str:
    """`mtm.review_task_claimed.v1` → `review_task_claimed`."""
    parts = event_type.split(".")
    if len(parts) != 3 or parts[0] != "mtm" or not parts[2].startswith("v"):
        raise UnknownEvent(f"type: {event_type!r} is not an mtm event type (mtm.<event>.v<version>)")
    return parts[1]


class EventRegistry:
    """Reads events of any stored version as the current model.

    The log is append-only, so an event written as v1 stays v1 forever; a consumer built against v2 reads it
    through the chain of upcasters v1 → v2 → … registered here. Current versions take the fast path
    (pydantic's JSON parser straight from bytes); older ones are upcast as plain JSON objects first.
    """

    def __init__(self, classes: Iterable[type[EventEnvelope]] = ()) -> None:
        self._current: dict[str, type[EventEnvelope]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[EventEnvelope]) -> None:
        """Make `cls` the current model of its event (replacing an older version's class)."""
        self._current[cls.EVENT_NAME] = cls

    def add_upcaster(self, event_name: str, from_version: int, upcast: Upcaster) -> None:
        self._upcasters[(event_name, from_version)] = upcast

    def copy(self) -> EventRegistry:
        other = EventRegistry(self._current.values())
        other._upcasters.update(self._upcasters)
        return other

    def current(self, event_name: str) -> type[EventEnvelope]:
        try:
            return self._current[event_name]
        except KeyError:
            raise UnknownEvent(f"type: no event named {event_name!r} is registered") from None

    @property
    def classes(self) -> tuple[type[EventEnvelope], ...]:
        return tuple(self._current.values())

    def parse(self, raw: bytes | str, expected: type[E]) -> E:
        """The event as `expected`'s current model, upcast when it was stored as an older version."""
        cls = self.current(expected.EVENT_NAME)
        try:
            return cls.model_validate_json(raw)  # type: ignore[return-value]
        except ValidationError as exc:
            if not _is_version_mismatch(exc):
                raise
        return self.parse_any(raw, expected)

    def parse_stored(self, subject: str, raw: bytes | str) -> EventEnvelope:
        """An event read from the patient log, typed by its subject's event token (the fast path when current)."""
        name = subject.rsplit(".", 2)[-2] if subject.count(".") >= 2 else ""
        return self.parse(raw, self.current(name))

    def parse_any(self, raw: bytes | str, expected: type[E] | None = None) -> E:
        """Any registered event, upcast as needed; with `expected`, the body must be that event."""
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise UnknownEvent(f"body: expected a JSON object, got {type(body).__name__}")
        name = event_name_of(str(body.get("type", "")))
        if expected is not None and name != expected.EVENT_NAME:
            raise UnknownEvent(f"type: expected {expected.EVENT_NAME}, got {name}")
        cls = self.current(name)
        return cls.model_validate(self.upcast(body))  # type: ignore[return-value]

    def upcast(self, body: dict[str, Any]) -> dict[str, Any]:
        """The stored JSON object brought to the current version of its event, one step at a time."""
        name = event_name_of(str(body.get("type", "")))
        cls = self.current(name)
        target = cls.version()
        version = body.get("schema_version", 1)
        if not isinstance(version, int) or version < 1:
            raise UnknownEvent(f"schema_version: {version!r} is not a version number")
        if version > target:
            raise UnknownEvent(f"schema_version: {name} v{version} is newer than this reader (v{target})")
        while version < target:
            upcast = self._upcasters.get((name, version))
            if upcast is None:
                raise UnknownEvent(f"schema_version: no upcaster from {name} v{version} to v{version + 1}")
            body = upcast(dict(body))
            version += 1
            body["schema_version"] = version
            body["type"] = f"mtm.{name}.v{version}"
        return body


def _is_version_mismatch(exc: ValidationError) -> bool:
    """Only a wrong `type`/`schema_version` literal sends a body down the (slower) upcasting path."""
    return any(error["loc"][:1] in {("type",), ("schema_version",)} for error in exc.errors())
