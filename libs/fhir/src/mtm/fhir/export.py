"""mtm's records as FHIR R4: the CMR's MAP (CarePlan) and PML (SMP List of MedicationStatement), and one patient's all.

Every resource gets a stable `urn:uuid` derived from what it is (type and mtm id), every reference points at an
entry of the same Bundle, and `check_bundle` proves both: each resource validates with fhir.resources and each
reference resolves. Inputs are the replies of the services' queries (plain JSON), so this library imports no
service.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from mtm.contracts.documentation import ActionPlanDocument, PersonalMedication
from mtm.fhir import codes
from mtm.fhir.validation import load_bundle

_NAMESPACE = uuid.UUID("9a3c5f0e-7d4b-4f8e-a1c2-5e6f7a8b9c0d")
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SMP_LIST = "http://hl7.org/fhir/us/smp/StructureDefinition/smp-medication-list"
SMP_STATEMENT = "http://hl7.org/fhir/us/smp/StructureDefinition/smp-medicationstatement"
MEDICATION_SUMMARY = "10160-0"
# DetectedIssue.code (v3 ActCode detected-issue codes) for each kind of alert and discrepancy.
ISSUE_CODE = {
    "interaction": ("DRG", "Drug Interaction Alert"),
    "duplication": ("DUPTHPY", "Duplicate Therapy Alert"),
    "dose": ("DOSE", "Dosage problem"),
    "renal": ("DOSECOND", "dosage-condition alert"),
    "condition": ("COND", "Condition Alert"),
    "allergy": ("ALGY", "Allergy Alert"),
    "geriatric": ("AGE", "Age Alert"),
    "pharmacogenomic": ("DACT", "drug action detected issue"),
    "unresolved": ("ISSUE", "detected issue"),
    "discrepancy": ("ISSUE", "detected issue"),
    "problem": ("ISSUE", "detected issue"),
}
SEVERITY = {"high": "high", "moderate": "moderate", "low": "low"}
MITIGATION_DISPLAY = {
    "1": "Therapy Appropriate",
    "2": "Assessed Patient",
    "3": "Patient Explanation",
    "4": "Consulted Other Source",
    "5": "Consulted Prescriber",
    "6": "Prescriber Declined Change",
    "7": "Interacting Therapy No Longer Active/Planned",
    "8": "Other Action Taken",
    "9": "Instituted Ongoing Monitoring Program",
    "10": "Provided Patient Education",
    "11": "Added Concurrent Therapy",
    "12": "Temporarily Suspended Concurrent Therapy",
    "13": "Stopped Concurrent Therapy",
    "14": "Supply Appropriate",
    "15": "Replacement",
    "16": "Vacation Supply",
    "17": "Weekend Supply",
    "18": "Leave of Absence",
    "19": "Consulted Supplier",
}
TASK_STATUS = {"requested": "requested", "in-progress": "in-progress", "completed": "completed"}
REFERRAL_STATUS = {"requested": "active", "accepted": "completed", "modified": "completed", "declined": "revoked"}
NOTIFICATION_STATUS = {"pending": "in-progress", "delivered": "completed", "failed": "stopped"}


def urn(kind: str, key: object) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{kind}:{key}')}"


def _ref(url: str, display: str | None = None) -> dict[str, str]:
    return {"reference": url, **({"display": display} if display else {})}


def _text(value: str) -> dict[str, str]:
    return {"text": value}


def _day(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, date | datetime) else str(value)


@dataclass
class BundleBuilder:
    """Collects resources once each (by full URL), in the order they were first added."""

    patient_id: str
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, url: str, resource: dict[str, Any]) -> str:
        if url not in self.entries:
            self.entries[url] = {**resource, "id": url.removeprefix("urn:uuid:")}
        return url

    @property
    def patient(self) -> str:
        return self.add(
            urn("Patient", self.patient_id),
            {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:mtm:patient", "value": self.patient_id}],
            },
        )

    def practitioner(self, practitioner_id: str) -> str:
        return self.add(
            urn("Practitioner", practitioner_id),
            {
                "resourceType": "Practitioner",
                "identifier": [{"system": "urn:mtm:practitioner", "value": practitioner_id}],
            },
        )

    def bundle(self, bundle_id: str, timestamp: str | None = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "id": bundle_id,
            "type": "collection",
            "entry": [{"fullUrl": url, "resource": resource} for url, resource in self.entries.items()],
        }
        if timestamp:
            bundle["timestamp"] = timestamp
        return bundle


# --- the CMR's written summary --------------------------------------------------------------------------------


def _statement(builder: BundleBuilder, medication: PersonalMedication, asserted: str, key: str) -> str:
    concept: dict[str, Any] = {"text": medication.name}
    if medication.rxnorm_code:
        concept["coding"] = [{"system": codes.RXNORM, "code": medication.rxnorm_code}]
    statement: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "meta": {"profile": [SMP_STATEMENT]},
        "status": "stopped" if medication.stopped else "active",
        "medicationCodeableConcept": concept,
        "subject": _ref(builder.patient),
        "dateAsserted": asserted,
        "dosage": [{"text": medication.how_i_use_it}],
    }
    if medication.started or medication.stopped:
        statement["effectivePeriod"] = {
            k: v for k, v in (("start", _day(medication.started)), ("end", _day(medication.stopped))) if v
        }
    if medication.why_i_use_it:
        statement["reasonCode"] = [_text(medication.why_i_use_it)]
    if medication.why_stopped:
        statement["statusReason"] = [_text(medication.why_stopped)]
    if medication.prescriber:
        statement["note"] = [{"text": f"Prescriber: {medication.prescriber}"}]
    return builder.add(urn("MedicationStatement", key), statement)


def add_action_plan(builder: BundleBuilder, document: ActionPlanDocument) -> tuple[str, str]:
    """The MAP as a CarePlan and the PML as an SMP medication List; returns their full URLs."""
    author = builder.practitioner(document.pharmacist_id)
    prepared = document.performed_on.isoformat()
    statements = [
        _statement(builder, medication, prepared, f"{document.task_id}:{number}")
        for number, medication in enumerate(document.medications)
    ]
    medication_list: dict[str, Any] = {
        "resourceType": "List",
        "meta": {"profile": [SMP_LIST]},
        "status": "current",
        "mode": "snapshot",
        "title": "Personal Medication List",
        "code": {
            "coding": [
                {"system": codes.LOINC, "code": MEDICATION_SUMMARY, "display": "History of Medication use Narrative"}
            ]
        },
        "subject": _ref(builder.patient),
        "date": prepared,
        "source": _ref(author),
    }
    if statements:
        medication_list["entry"] = [{"item": _ref(url)} for url in statements]
    else:
        medication_list["emptyReason"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "nilknown"}]
        }
    if document.allergies:
        medication_list["note"] = [{"text": "Allergies or side effects: " + ", ".join(document.allergies)}]
    pml = builder.add(urn("List", f"pml:{document.task_id}"), medication_list)
    activities = [
        {
            "detail": {
                "kind": "Task",
                "code": _text(item.topic),
                "status": "not-started",
                "description": step,
            }
        }
        for item in document.action_plan
        for step in item.steps
    ]
    activities += [
        {
            "detail": {
                "kind": "Appointment",
                "code": _text("Follow-up"),
                "status": "scheduled",
                "scheduledString": follow_up.due.isoformat(),
                "description": follow_up.reason,
            }
        }
        for follow_up in document.follow_ups
    ]
    care_plan: dict[str, Any] = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "title": "Medication Action Plan",
        "description": "What we talked about and what I need to do, from my medication review of " + prepared,
        "subject": _ref(builder.patient),
        "created": prepared,
        "author": _ref(author),
        "supportingInfo": [_ref(pml)],
    }
    if activities:
        care_plan["activity"] = activities
    plan = builder.add(urn("CarePlan", document.task_id), care_plan)
    return plan, pml


def action_plan_bundle(document: ActionPlanDocument) -> dict[str, Any]:
    """`mtm map --format fhir`: the CarePlan (MAP) and the List of MedicationStatement (PML) of one CMR."""
    builder = BundleBuilder(document.patient_id)
    add_action_plan(builder, document)
    return builder.bundle(str(uuid.uuid5(_NAMESPACE, f"map-bundle:{document.task_id}")))


# --- everything mtm holds for a patient -----------------------------------------------------------------------


def _issue(
    builder: BundleBuilder,
    url: str,
    *,
    kind: str,
    detail: str,
    severity: str | None,
    identified: str | None,
    author: str | None,
    status: str = "final",
    mitigations: Iterable[tuple[str, str | None, str | None]] = (),
) -> str:
    code, display = ISSUE_CODE.get(kind, ISSUE_CODE["problem"])
    resource: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "status": status,
        "code": {"coding": [{"system": V3_ACT_CODE, "code": code, "display": display}], "text": kind},
        "patient": _ref(builder.patient),
        "detail": detail,
    }
    if severity in SEVERITY:
        resource["severity"] = SEVERITY[severity]
    if identified:
        resource["identifiedDateTime"] = identified
    if author:
        resource["author"] = _ref(author)
    actions = [
        {
            "action": {"coding": [{"system": V3_ACT_CODE, "code": action, "display": MITIGATION_DISPLAY[action]}]},
            **({"date": on} if on else {}),
            **({"author": _ref(who)} if who else {}),
        }
        for action, on, who in mitigations
    ]
    if actions:
        resource["mitigation"] = actions
    return builder.add(url, resource)


def _provenance(builder: BundleBuilder, target: str, recorded: str, actor: Mapping[str, Any] | None, activity: str):
    if not actor:
        return
    who = actor.get("practitioner_id") or actor.get("user_id")
    builder.add(
        urn("Provenance", f"{target}:{activity}"),
        {
            "resourceType": "Provenance",
            "target": [_ref(target)],
            "recorded": recorded,
            "activity": _text(activity),
            "agent": [{"who": _ref(builder.practitioner(who), f"{actor.get('role')} {actor.get('user_id')}")}],
        },
    )


def _task_resources(builder: BundleBuilder, task: Mapping[str, Any]) -> None:
    task_id = task["task_id"]
    data = task["task"]
    completion = task.get("completion") or {}
    documentation = completion.get("documentation") or {}
    task_url = urn("Task", task_id)
    outputs: list[dict[str, Any]] = []
    for alert in data.get("alerts", []):
        overridden = alert.get("overridden_by")
        override = next((o for o in task.get("_overrides", []) if o["override_id"] == overridden), None)
        mitigations = [("1", _day(override.get("overridden_at"))[:10], None)] if override else []
        url = _issue(
            builder,
            urn("DetectedIssue", f"{task_id}:alert:{alert['index']}"),
            kind=alert["kind"],
            detail=alert["message"] + (f" Overridden: {override['reason']}" if override else ""),
            severity=alert["severity"],
            identified=task["created_at"],
            author=None,
            status="cancelled" if alert.get("suppressed_by") else "final",
            mitigations=mitigations,
        )
        outputs.append({"type": _text("alert"), "valueReference": _ref(url)})
    for index, discrepancy in enumerate(data.get("discrepancies", [])):
        url = _issue(
            builder,
            urn("DetectedIssue", f"{task_id}:discrepancy:{index}"),
            kind="discrepancy",
            detail=discrepancy["message"],
            severity=None,
            identified=task["created_at"],
            author=None,
        )
        outputs.append({"type": _text("discrepancy"), "valueReference": _ref(url)})
    pharmacist = completion.get("pharmacist_id")
    author = builder.practitioner(pharmacist) if pharmacist else None
    for problem in documentation.get("problems", []):
        on = documentation.get("performed_on")
        url = _issue(
            builder,
            urn("DetectedIssue", f"problem:{problem['problem_id']}"),
            kind="problem",
            detail=f"{problem['category']}: {problem['detail']}",
            severity=problem["severity"],
            identified=on,
            author=author,
            mitigations=[(m["action"], m.get("on") or on, author) for m in problem.get("mitigations", [])],
        )
        outputs.append({"type": _text("drug therapy problem"), "valueReference": _ref(url)})
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "status": TASK_STATUS[task["status"]],
        "intent": "order",
        "priority": task["priority"],
        "code": _text(task["reason"]),
        "for": _ref(builder.patient),
        "authoredOn": task["created_at"],
    }
    if task.get("due"):
        resource["restriction"] = {"period": {"end": task["due"]}}
    if task.get("owner"):
        resource["owner"] = _ref(builder.practitioner(task["owner"]))
    if task.get("completed_at"):
        resource["executionPeriod"] = {"end": task["completed_at"]}
    if completion.get("note"):
        resource["note"] = [{"text": completion["note"]}]
    if outputs:
        resource["output"] = outputs
    builder.add(task_url, resource)
    if task.get("completed_at"):
        _provenance(builder, task_url, task["completed_at"], completion.get("actor"), "review completed")


def _referral_resources(builder: BundleBuilder, referral: Mapping[str, Any], problems: Mapping[str, str]) -> str:
    rec = referral["referral"]["recommendation"]
    url = urn("ServiceRequest", referral["referral_id"])
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": REFERRAL_STATUS[referral["status"]],
        "intent": "proposal",
        "priority": referral["referral"].get("priority", "routine"),
        "code": _text(rec["text"]),
        "subject": _ref(builder.patient),
        "authoredOn": referral["requested_at"],
        "requester": _ref(builder.practitioner(referral["referral"]["pharmacist_id"])),
        "performer": [_ref(builder.practitioner(referral["physician_id"]))],
    }
    problem = problems.get(rec.get("problem_id") or "")
    if problem:
        resource["reasonReference"] = [_ref(problem)]
    answer = referral.get("answer")
    if answer:
        said = f"Prescriber {answer['decision']}" + (f": {answer['note']}" if answer.get("note") else "")
        resource["note"] = [{"text": said}]
        answered = referral.get("answered_at") or referral["requested_at"]
        _provenance(builder, url, answered, answer.get("actor"), f"referral {answer['decision']}")
    return builder.add(url, resource)


def _communication(builder: BundleBuilder, notification: Mapping[str, Any]) -> None:
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "status": NOTIFICATION_STATUS[notification["status"]],
        "subject": _ref(builder.patient),
        "about": [_ref(urn("ServiceRequest", notification["referral_id"]))],
        "recipient": [_ref(builder.practitioner(notification["recipient_id"]))],
        "medium": [_text(notification["channel"])],
    }
    if notification.get("finished_at") and notification["status"] == "delivered":
        resource["sent"] = notification["finished_at"]
    if notification.get("last_error"):
        resource["note"] = [{"text": notification["last_error"]}]
    builder.add(urn("Communication", notification["notification_id"]), resource)


def _current_list(builder: BundleBuilder, medication_list: Mapping[str, Any]) -> None:
    statements = []
    for number, entry in enumerate(medication_list.get("entries", [])):
        medication = entry["medication"]
        concept: dict[str, Any] = {"text": medication["text"]}
        if medication.get("rxnorm_code"):
            concept["coding"] = [{"system": codes.RXNORM, "code": medication["rxnorm_code"]}]
        recorded = entry["provenance"][-1]["recorded_at"]
        statement = {
            "resourceType": "MedicationStatement",
            "meta": {"profile": [SMP_STATEMENT]},
            "status": "active",
            "medicationCodeableConcept": concept,
            "subject": _ref(builder.patient),
            "dateAsserted": recorded,
            "effectivePeriod": {"start": entry["provenance"][0]["recorded_at"]},
        }
        statements.append(builder.add(urn("MedicationStatement", f"current:{number}:{medication['text']}"), statement))
    resource: dict[str, Any] = {
        "resourceType": "List",
        "meta": {"profile": [SMP_LIST]},
        "status": "current",
        "mode": "working",
        "title": "Current medication list",
        "code": {
            "coding": [
                {"system": codes.LOINC, "code": MEDICATION_SUMMARY, "display": "History of Medication use Narrative"}
            ]
        },
        "subject": _ref(builder.patient),
    }
    if medication_list.get("updated_at"):
        resource["date"] = medication_list["updated_at"]
    if statements:
        resource["entry"] = [{"item": _ref(url)} for url in statements]
    else:
        resource["emptyReason"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "nilknown"}]
        }
    builder.add(urn("List", f"current:{builder.patient_id}"), resource)


def patient_bundle(
    patient_id: str,
    *,
    review_record: Mapping[str, Any] | None,
    medication_list: Mapping[str, Any] | None = None,
    referrals: Iterable[Mapping[str, Any]] = (),
    notifications: Iterable[Mapping[str, Any]] = (),
    action_plan: ActionPlanDocument | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """`mtm fhir export`: one Bundle (collection) of everything mtm holds for the patient."""
    builder = BundleBuilder(patient_id)
    _ = builder.patient
    if medication_list:
        _current_list(builder, medication_list)
    if action_plan is not None:
        add_action_plan(builder, action_plan)
    record = review_record or {}
    overrides = record.get("overrides", [])
    for task in record.get("tasks", []):
        _task_resources(builder, {**task, "_overrides": overrides})
    for override in overrides:
        target = urn("DetectedIssue", f"{override['task_id']}:alert:{override['alert']}")
        _provenance(builder, target, override["overridden_at"], override.get("actor"), "alert overridden")
    problems = {
        problem["problem_id"]: urn("DetectedIssue", f"problem:{problem['problem_id']}")
        for task in record.get("tasks", [])
        for problem in ((task.get("completion") or {}).get("documentation") or {}).get("problems", [])
    }
    for referral in referrals:
        _referral_resources(builder, referral, problems)
    for notification in notifications:
        _communication(builder, notification)
    return builder.bundle(str(uuid.uuid5(_NAMESPACE, f"patient-bundle:{patient_id}:{timestamp}")), timestamp)


def references(value: Any) -> Iterator[str]:
    """Every `reference` string anywhere in a resource."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                yield item
            else:
                yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def check_bundle(bundle: dict[str, Any]) -> None:
    """Raise BundleError unless every resource validates (fhir.resources) and every reference resolves inside."""
    from mtm.fhir.errors import BundleError

    load_bundle(bundle)
    full_urls = {entry["fullUrl"] for entry in bundle.get("entry", [])}
    for index, entry in enumerate(bundle.get("entry", [])):
        for ref in references(entry["resource"]):
            if ref not in full_urls and not ref.startswith("#"):
                raise BundleError("Bundle", f"entry[{index}]", f"reference {ref} does not resolve inside the bundle")
