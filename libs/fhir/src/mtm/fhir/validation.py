"""Load and validate a FHIR R4 bundle with fhir.resources (R4B models), reporting errors as BundleError."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fhir_core.fhirabstractmodel import FHIRAbstractModel
from pydantic import ValidationError

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from mtm.fhir.errors import BundleError

Loc = Sequence[str | int]


def read_json_file(path: Path) -> Any:
    """A file's JSON for the file commands; ValueError says what is wrong and where (unreadable, not JSON)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read file: {exc.strerror or exc}") from exc
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc


def is_fhir_bundle(obj: object) -> bool:
    """True for a JSON object that declares itself a FHIR Bundle (the CLI's cue to parse it as FHIR)."""
    return isinstance(obj, dict) and obj.get("resourceType") == "Bundle"


def load_bundle(raw: bytes | str | dict[str, Any]) -> Bundle:
    """Parse JSON and validate it as a Bundle, including the required code bindings fhir.resources leaves to us."""
    data = _load_json(raw)
    if not isinstance(data, dict):
        raise BundleError("Bundle", "$", f"expected a JSON object, got {type(data).__name__}")
    if data.get("resourceType") != "Bundle":
        raise BundleError("Bundle", "resourceType", f"expected 'Bundle', got {data.get('resourceType')!r}")
    _check_entry_resource_types(data)
    try:
        bundle = Bundle.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = exc.error_count() - 1
        reason = first["msg"] + (f" (and {more} more error{'s' if more > 1 else ''})" if more else "")
        raise _located_error(data, first["loc"], reason) from None
    for loc, value, allowed in _code_binding_violations(bundle, ()):
        raise _located_error(data, loc, f"{value!r} is not one of {', '.join(allowed)}")
    return bundle


def _load_json(raw: bytes | str | dict[str, Any]) -> object:
    if isinstance(raw, dict):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError("Bundle", "$", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (UnicodeDecodeError, TypeError) as exc:
        raise BundleError("Bundle", "$", f"not JSON text: {exc}") from None


def _check_entry_resource_types(data: dict[str, Any]) -> None:
    """fhir.resources accepts a resource without resourceType and crashes on an unknown one; catch both first."""
    entries = data.get("entry")
    if not isinstance(entries, list):
        return
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        resource_type = resource.get("resourceType")
        field = f"entry[{index}].resource.resourceType"
        if not isinstance(resource_type, str) or not resource_type:
            raise BundleError("Bundle", field, "missing")
        try:
            get_fhir_model_class(resource_type)
        except (ValueError, KeyError):
            raise BundleError("Bundle", field, f"unknown FHIR resource type {resource_type!r}") from None
        contained_resources = resource.get("contained") or []
        if not isinstance(contained_resources, list):
            raise BundleError(_resource_label(resource, index), "contained", "must be a list of resources")
        for contained_index, contained in enumerate(contained_resources):
            contained_type = contained.get("resourceType") if isinstance(contained, dict) else None
            try:
                get_fhir_model_class(str(contained_type))
            except (ValueError, KeyError):
                raise BundleError(
                    _resource_label(resource, index),
                    f"contained[{contained_index}].resourceType",
                    f"unknown FHIR resource type {contained_type!r}",
                ) from None


def _code_binding_violations(model: FHIRAbstractModel, loc: tuple[str | int, ...]) -> Iterator[tuple]:
    """Codes outside a required binding; fhir.resources lists the allowed values but does not enforce them."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name, None)
        if value is None:
            continue
        key = field.alias or name
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        allowed = extra.get("enum_values")
        # fhir.resources ends a list it abridged with "+" (Task.status: "draft, requested, received, accepted, +"):
        # such a list is not the binding, so it is not enforced.
        if allowed and "+" not in allowed:
            values = value if isinstance(value, list) else [value]
            for index, item in enumerate(values):
                if item not in allowed:
                    yield ((*loc, key, index) if isinstance(value, list) else (*loc, key)), item, allowed
        elif isinstance(value, FHIRAbstractModel):
            yield from _code_binding_violations(value, (*loc, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, FHIRAbstractModel):
                    yield from _code_binding_violations(item, (*loc, key, index))


def _located_error(data: dict[str, Any], loc: Loc, reason: str) -> BundleError:
    """Attribute an error inside `entry[i].resource` to that resource (`Type/id`) rather than to the bundle."""
    entries = data.get("entry")
    if (
        len(loc) >= 3
        and loc[0] == "entry"
        and isinstance(loc[1], int)
        and loc[2] == "resource"
        and isinstance(entries, list)
        and loc[1] < len(entries)
        and isinstance(entries[loc[1]], dict)
        and isinstance(entries[loc[1]].get("resource"), dict)
    ):
        resource = entries[loc[1]]["resource"]
        return BundleError(_resource_label(resource, loc[1]), _format_path(loc[3:]) or "$", reason)
    return BundleError("Bundle", _format_path(loc) or "$", reason)


def _resource_label(resource: dict[str, Any], entry_index: int) -> str:
    resource_type = resource.get("resourceType") or "Resource"
    resource_id = resource.get("id")
    if isinstance(resource_id, str) and resource_id:
        return f"{resource_type}/{resource_id}"
    return f"{resource_type} (entry[{entry_index}])"


def _format_path(loc: Loc) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path
