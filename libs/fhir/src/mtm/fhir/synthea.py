"""Turn Synthea patient bundles into transition-of-care bundles of the mtm FHIR convention, for replay.

Rules (Synthea 2019 MedicationRequests carry only `authoredOn` and `status`):

* A request is active from its `authoredOn`. An `active` request never ends. Any other (stopped) request ends
  when the next request for the same medication (RxNorm code, else text) is authored; one that was never
  renewed ends with its inpatient stay if an inpatient encounter wrote it (in-hospital orders), otherwise at
  the start of the patient's next encounter (it was stopped by the next contact), or with its own encounter
  when there is none.
* Home list (LOINC 10160-0) = one MedicationStatement per medication active just before admission
  (authored before the encounter start and not ended before it).
* Discharge list (LOINC 10183-2) = one MedicationRequest (status `active`) per medication active after
  discharge (encounter end), flagged 01 unchanged when it was also a home medication, 04 prescribed when
  not; home medications no longer active after discharge are listed as `stopped` with flag 05 ceased.
  Orders started and ended within the stay are on neither list.
* Transitions: one per inpatient encounter (class IMP). A patient without any inpatient encounter gets one
  synthetic transition at their last encounter, so the whole population can be replayed; the bundle's
  `meta.tag` says which (`inpatient-discharge` or `synthetic-transition`).
* Context as of discharge: Conditions with onset before and no abatement before discharge (clinicalStatus set
  to active), AllergyIntolerances recorded before discharge, the latest eGFR, creatinine and body weight
  Observations before discharge.
* Care team: the stay's clinician becomes the attending (participant ATND); the clinician of the last ambulatory
  visit before admission stands in for the primary-care physician (Patient.generalPractitioner).
* Ids are uuid5 of the patient and encounter ids, so a replay produces the same bundles and events.
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mtm.fhir import codes

REPLAY_NAMESPACE = uuid.UUID("6f1d3c2e-8b7a-5e4f-9a10-3c5b7d9e1f20")
REPLAY_TAG_SYSTEM = "urn:mtm:synthea-replay"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
KEPT_RESOURCE_TYPES = frozenset({"Patient", "Encounter", "Condition", "MedicationRequest", "AllergyIntolerance"})
KEPT_OBSERVATION_CODES = codes.EGFR_CODES | codes.CREATININE_CODES | {codes.BODY_WEIGHT}
_PATIENT_FIELDS = ("resourceType", "id", "gender", "birthDate", "deceasedDateTime", "generalPractitioner")
_LIST_EMPTY_REASON = "http://terminology.hl7.org/CodeSystem/list-empty-reason"
_FLAG_DISPLAY = {"01": "Unchanged", "04": "Prescribed", "05": "Ceased"}


def transitions_from_patient_bundle(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """One transition-of-care bundle per inpatient stay (or one synthetic at the last encounter)."""
    resources = [e["resource"] for e in bundle.get("entry", ()) if isinstance(e.get("resource"), dict)]
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for resource in resources:
        by_type[resource["resourceType"]].append(resource)
    if not by_type["Patient"]:
        return []
    patient = by_type["Patient"][0]
    encounters = sorted((e for e in by_type["Encounter"] if _start(e) is not None), key=lambda e: (_start(e), e["id"]))
    if not encounters:
        return []
    inpatient = [e for e in encounters if (e.get("class") or {}).get("code") == "IMP"]
    orders = _orders(by_type["MedicationRequest"], encounters)
    kind = "inpatient-discharge" if inpatient else "synthetic-transition"
    return [_transition(patient, encounter, orders, by_type, kind) for encounter in (inpatient or encounters[-1:])]


def compact_patient_bundle(bundle: dict[str, Any]) -> dict[str, Any]:
    """Only what the converter reads: no narratives, tags, names or addresses; Observations of the kept codes."""
    entries = []
    for entry in bundle.get("entry", ()):
        resource = entry.get("resource") or {}
        resource_type = resource.get("resourceType")
        if resource_type == "Observation":
            if not any(c.get("code") in KEPT_OBSERVATION_CODES for c in resource.get("code", {}).get("coding", ())):
                continue
        elif resource_type not in KEPT_RESOURCE_TYPES:
            continue
        if resource_type == "Patient":
            resource = {k: resource[k] for k in _PATIENT_FIELDS if k in resource}
        else:
            resource = {k: v for k, v in resource.items() if k not in ("meta", "text")}
        entries.append({"fullUrl": entry.get("fullUrl", f"urn:uuid:{resource['id']}"), "resource": resource})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


# --- medication activity --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Order:
    request: dict[str, Any]
    medication_key: str
    start: datetime
    end: datetime | None

    def active_just_before(self, moment: datetime) -> bool:
        return self.start < moment and (self.end is None or self.end >= moment)

    def active_after(self, moment: datetime) -> bool:
        return self.start <= moment and (self.end is None or self.end > moment)


def _orders(requests: list[dict[str, Any]], encounters: list[dict[str, Any]]) -> list[_Order]:
    by_id = {e["id"]: e for e in encounters}
    starts = [_start(e) for e in encounters]
    dated = sorted(
        ((_parse(r.get("authoredOn")), r) for r in requests if _parse(r.get("authoredOn")) is not None),
        key=lambda pair: (pair[0], pair[1]["id"]),
    )
    by_medication: dict[str, list[tuple[datetime, dict[str, Any]]]] = defaultdict(list)
    for authored, request in dated:
        by_medication[_medication_key(request)].append((authored, request))
    orders = []
    for key, series in by_medication.items():
        for index, (authored, request) in enumerate(series):
            if request.get("status") == "active":
                end = None
            elif index + 1 < len(series):
                end = series[index + 1][0]
            else:
                end = _unrenewed_end(authored, by_id.get(_reference_id(request.get("encounter"))), starts)
            orders.append(_Order(request, key, authored, end))
    return orders


def _unrenewed_end(authored: datetime, written_in: dict[str, Any] | None, starts: list[Any]) -> datetime:
    if written_in is not None and (written_in.get("class") or {}).get("code") == "IMP":
        return _end(written_in) or authored
    later = [start for start in starts if start > authored]
    if later:
        return min(later)
    return (_end(written_in) if written_in else None) or authored


def _medication_key(request: dict[str, Any]) -> str:
    concept = request.get("medicationCodeableConcept") or {}
    rxnorm = next((c.get("code") for c in concept.get("coding", ()) if c.get("system") == codes.RXNORM), None)
    return f"rxnorm:{rxnorm}" if rxnorm else f"text:{concept.get('text', '').lower()}"


def _latest_per_medication(orders: list[_Order]) -> dict[str, _Order]:
    latest: dict[str, _Order] = {}
    for order in sorted(orders, key=lambda o: (o.start, o.request["id"])):
        latest[order.medication_key] = order
    return latest


# --- one transition -------------------------------------------------------------------------------------------


def _transition(
    patient: dict[str, Any],
    encounter: dict[str, Any],
    orders: list[_Order],
    by_type: dict[str, list[dict[str, Any]]],
    kind: str,
) -> dict[str, Any]:
    patient_id, encounter_id = patient["id"], encounter["id"]
    admitted, discharged = _start(encounter), _end(encounter)
    assert admitted is not None and discharged is not None

    def new_id(*parts: str) -> str:
        return str(uuid.uuid5(REPLAY_NAMESPACE, "/".join((patient_id, encounter_id, *parts))))

    subject = {"reference": f"urn:uuid:{patient_id}"}
    home = _latest_per_medication([o for o in orders if o.active_just_before(admitted)])
    after = _latest_per_medication([o for o in orders if o.active_after(discharged)])

    statements = [
        _home_statement(order, new_id("home", order.request["id"]), subject, admitted)
        for order in sorted(home.values(), key=lambda o: (o.start, o.request["id"]))
    ]
    flagged: list[tuple[dict[str, Any], str]] = []
    for order in sorted(after.values(), key=lambda o: (o.start, o.request["id"])):
        flagged.append((_discharge_request(order.request, subject), "01" if order.medication_key in home else "04"))
    for key, order in sorted(home.items(), key=lambda kv: (kv[1].start, kv[1].request["id"])):
        if key not in after:
            flagged.append((_discharge_request(order.request, subject, stopped=True), "05"))

    encounter_reference = {"reference": f"urn:uuid:{encounter_id}"}
    home_list = _list(
        new_id("home-list"),
        codes.HOME_MEDICATIONS_LIST,
        "History of Medication use Narrative",
        [({"reference": f"urn:uuid:{s['id']}"}, None) for s in statements],
        subject,
        encounter_reference,
        admitted,
    )
    discharge_list = _list(
        new_id("discharge-list"),
        codes.DISCHARGE_MEDICATIONS_LIST,
        "Hospital discharge medications Narrative",
        [({"reference": f"urn:uuid:{r['id']}"}, flag) for r, flag in flagged],
        subject,
        encounter_reference,
        discharged,
    )
    context = [
        *(_active_condition(c) for c in by_type["Condition"] if _condition_active_at(c, discharged)),
        *(a for a in by_type["AllergyIntolerance"] if _not_after(a.get("recordedDate"), discharged)),
        *_latest_observations(by_type["Observation"], discharged),
    ]
    resources = [
        _with_primary_care(patient, by_type["Encounter"], admitted),
        _attended(encounter),
        home_list,
        discharge_list,
        *statements,
        *(request for request, _ in flagged),
        *context,
    ]
    return {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"tag": [{"system": REPLAY_TAG_SYSTEM, "code": kind}]},
        "type": "collection",
        "timestamp": _iso(discharged),
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }


def _clinician(encounter: dict[str, Any]) -> dict[str, str] | None:
    for participant in encounter.get("participant", []):
        if participant.get("individual", {}).get("reference"):
            return participant["individual"]
    return None


def _attended(encounter: dict[str, Any]) -> dict[str, Any]:
    """The stay's clinician as its attending (Synthea lists one participant without a type)."""
    stay = {k: v for k, v in encounter.items() if k not in ("meta", "text", "participant")}
    clinician = _clinician(encounter)
    if clinician is not None:
        stay["participant"] = [
            {"type": [{"coding": [{"system": _PARTICIPATION, "code": "ATND"}]}], "individual": clinician}
        ]
    return stay


def _with_primary_care(patient: dict[str, Any], encounters: list[dict[str, Any]], before: datetime) -> dict[str, Any]:
    """The clinician of the last ambulatory visit before admission stands in for the primary-care physician."""
    person = {k: patient[k] for k in _PATIENT_FIELDS if k in patient}
    visits = [
        e
        for e in encounters
        if e.get("class", {}).get("code") == "AMB" and (_start(e) or before) < before and _clinician(e) is not None
    ]
    if visits:
        person["generalPractitioner"] = [_clinician(max(visits, key=lambda e: _start(e) or before))]
    return person


def _home_statement(order: _Order, statement_id: str, subject: dict[str, str], admitted: datetime) -> dict[str, Any]:
    request = order.request
    statement: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": statement_id,
        "status": "active",
        "medicationCodeableConcept": request["medicationCodeableConcept"],
        "subject": subject,
        "effectivePeriod": {"start": request["authoredOn"]},
        "dateAsserted": _iso(admitted),
        "derivedFrom": [{"reference": f"MedicationRequest/{request['id']}"}],
    }
    if request.get("dosageInstruction"):
        statement["dosage"] = request["dosageInstruction"]
    return statement


def _discharge_request(request: dict[str, Any], subject: dict[str, str], *, stopped: bool = False) -> dict[str, Any]:
    """The order as of discharge: Synthea's status is as of export, when a then-active order may have ended."""
    copy = {k: v for k, v in request.items() if k not in ("meta", "text")}
    copy["subject"] = subject
    copy["status"] = "stopped" if stopped else "active"
    return copy


def _list(
    list_id: str,
    loinc_code: str,
    display: str,
    items: list[tuple[dict[str, str], str | None]],
    subject: dict[str, str],
    encounter: dict[str, str],
    moment: datetime,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "List",
        "id": list_id,
        "status": "current",
        "mode": "snapshot",
        "code": {"coding": [{"system": codes.LOINC, "code": loinc_code, "display": display}]},
        "subject": subject,
        "encounter": encounter,
        "date": _iso(moment),
    }
    if not items:
        resource["emptyReason"] = {"coding": [{"system": _LIST_EMPTY_REASON, "code": "nilknown"}]}
        return resource
    resource["entry"] = [
        {"item": item}
        if flag is None
        else {
            "item": item,
            "flag": {"coding": [{"system": codes.LIST_ITEM_FLAG, "code": flag, "display": _FLAG_DISPLAY[flag]}]},
        }
        for item, flag in items
    ]
    return resource


def _condition_active_at(condition: dict[str, Any], moment: datetime) -> bool:
    onset = _parse(condition.get("onsetDateTime") or condition.get("recordedDate"))
    abated = _parse(condition.get("abatementDateTime"))
    return onset is not None and onset <= moment and (abated is None or abated > moment)


def _active_condition(condition: dict[str, Any]) -> dict[str, Any]:
    """As of discharge the condition was active, whatever its status at export time."""
    copy = {k: v for k, v in condition.items() if k not in ("meta", "text", "abatementDateTime")}
    copy["clinicalStatus"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
    }
    return copy


def _latest_observations(observations: list[dict[str, Any]], moment: datetime) -> list[dict[str, Any]]:
    latest: dict[str, tuple[datetime, dict[str, Any]]] = {}
    for observation in observations:
        code = next(
            (
                c.get("code")
                for c in observation.get("code", {}).get("coding", ())
                if c.get("code") in KEPT_OBSERVATION_CODES
            ),
            None,
        )
        effective = _parse(observation.get("effectiveDateTime") or observation.get("issued"))
        if code is None or effective is None or effective > moment:
            continue
        if code not in latest or effective >= latest[code][0]:
            latest[code] = (effective, observation)
    return [
        {k: v for k, v in observation.items() if k not in ("meta", "text")}
        for _, (_, observation) in sorted(latest.items())
    ]


# --- small helpers --------------------------------------------------------------------------------------------


def _reference_id(reference: dict[str, Any] | None) -> str:
    ref = (reference or {}).get("reference", "")
    return ref.removeprefix("urn:uuid:").split("/")[-1]


def _start(encounter: dict[str, Any] | None) -> datetime | None:
    return _parse(((encounter or {}).get("period") or {}).get("start"))


def _end(encounter: dict[str, Any] | None) -> datetime | None:
    period = (encounter or {}).get("period") or {}
    return _parse(period.get("end") or period.get("start"))


def _not_after(value: str | None, moment: datetime) -> bool:
    parsed = _parse(value)
    return parsed is None or parsed <= moment


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if len(value) > 10 else value + "T00:00:00+00:00")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _compact_directory(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.json")):
        compact = compact_patient_bundle(json.loads(path.read_text(encoding="utf-8")))
        (target / path.name).write_text(json.dumps(compact, separators=(",", ":"), ensure_ascii=False), "utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compact = commands.add_parser("compact", help="write compact copies of Synthea patient bundles")
    compact.add_argument("source", type=Path)
    compact.add_argument("target", type=Path)
    convert = commands.add_parser("convert", help="print the transition bundles of one patient bundle")
    convert.add_argument("bundle", type=Path)
    args = parser.parse_args(argv)
    if args.command == "compact":
        _compact_directory(args.source, args.target)
    else:
        transitions = transitions_from_patient_bundle(json.loads(args.bundle.read_text(encoding="utf-8")))
        print(json.dumps(transitions, indent=2))


if __name__ == "__main__":
    main()
