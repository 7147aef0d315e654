"""What reconciliation gives the `mtm` command (entry points, no stack needed): `mtm reconcile`, the bundle reader."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtm.contracts.events import Reconciliation

_NAMESPACE = uuid.UUID("5d0b7f36-9a54-4c1e-8f0e-8c2f6b7a1e90")


def read_discharge_bundle(path: Path) -> Reconciliation:
    """The file's reconciliation; ValueError says what is wrong and where (unreadable, not JSON, not a bundle).

    `mtm` hands it to every file command, review's `mtm check` too, as NATS carries `MedicationsReconciled` live.
    """
    from mtm.fhir import parse_bundle
    from mtm.fhir.validation import read_json_file
    from mtm.reconciliation.domain import reconcile

    body = read_json_file(path)
    # The id is derived from the file, so reconciling the same file twice gives the same result.
    return reconcile(parse_bundle(body), uuid.uuid5(_NAMESPACE, str(path.resolve())))


def reconcile() -> Callable[[Reconciliation], dict[str, Any]]:
    """reconcile FHIR R4 discharge bundles, one JSON line per file"""
    from mtm.reconciliation.domain import reconcile_to_report

    return reconcile_to_report


def read_discharge_intake(payload: bytes) -> tuple[str, ...]:
    """A discharge as the intake reads it (native or FHIR bundle), reconciled as the service will: its patient.

    ValueError says why the service would park it in its dead letters; `mtm publish-discharge` refuses it then.
    """
    from mtm.contracts import EVENTS
    from mtm.reconciliation.adapters.intake import discharge_parser
    from mtm.reconciliation.application import reconcile_now

    event = _read_intake(discharge_parser(EVENTS), payload)
    _as_service(lambda: reconcile_now(event))
    return (event.patient_id,)


def read_fill_intake(payload: bytes) -> tuple[str, ...]:
    """Pharmacy fills as the intake reads them (native or FHIR bundle): their patients; ValueError as above."""
    from mtm.contracts import EVENTS
    from mtm.reconciliation.adapters.intake import fill_parser

    fills = _read_intake(fill_parser(EVENTS), payload)
    return tuple(dict.fromkeys(fill.patient_id for fill in fills))


def _read_intake(parse: Callable[[Any], Any], payload: bytes) -> Any:
    from mtm.platform.consumer import Delivery

    delivery = Delivery(subject="", stream="", stream_seq=0, deliveries=1, headers={}, data=payload, raw=None)  # type: ignore[arg-type]
    return _as_service(lambda: parse(delivery))


def _as_service(read: Callable[[], Any]) -> Any:
    """What the intake consumer parks (`BatchProcessor`), with the same reason; anything else is a bug, raised."""
    from pydantic import ValidationError

    from mtm.platform.consumer import describe_invalid

    try:
        return read()
    except RecursionError as exc:
        raise ValueError("body: nested too deeply to read") from exc
    except (ValidationError, ValueError) as exc:
        raise ValueError(describe_invalid(exc)) from exc
