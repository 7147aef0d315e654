"""NATS subjects and JetStream stream names of mtm; services never spell a subject literally."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from typing import Final

from mtm.contracts.envelope import EventEnvelope

# --- the patient medication event log -------------------------------------------------------------------------
PATIENT_EVENTS_STREAM: Final = "PATIENT_EVENTS"
PATIENT_EVENTS_PREFIX: Final = "mtm.patient"
PATIENT_EVENTS_SUBJECTS: Final = f"{PATIENT_EVENTS_PREFIX}.>"
PATIENT_EVENTS_OWNER: Final = "reconciliation"
# The object store that keeps stored events too large for one message; the log holds a reference to each.
PATIENT_EVENT_BODIES_BUCKET: Final = "PATIENT_EVENT_BODIES"
PATIENT_EVENT_BODIES_STREAM: Final = f"OBJ_{PATIENT_EVENT_BODIES_BUCKET}"
# Fixed for the life of the log: changing it moves patients between partitions (a rebuild, not a setting).
PATIENT_PARTITIONS: Final = 16

# --- inbound discharges (native TransitionOfCareRecorded JSON or a FHIR R4 Bundle) ----------------------------
DISCHARGE_INTAKE_STREAM: Final = "DISCHARGE_INTAKE"
DISCHARGE_INTAKE_SUBJECT: Final = "mtm.intake.discharge.v1"
DISCHARGE_INTAKE_OWNER: Final = "reconciliation"

# --- inbound pharmacy fills (native MedicationDispensed JSON or a FHIR R4 Bundle of MedicationDispense) ---------
FILL_INTAKE_STREAM: Final = "FILL_INTAKE"
FILL_INTAKE_SUBJECT: Final = "mtm.intake.fill.v1"
FILL_INTAKE_OWNER: Final = "reconciliation"

# --- per-physician inbox (notify owns the stream so physicians' tools can catch up after being offline) -------
PHYSICIAN_INBOX_STREAM: Final = "PHYSICIAN_INBOX"
PHYSICIAN_INBOX_PREFIX: Final = "mtm.inbox.physician"
PHYSICIAN_INBOX_OWNER: Final = "notify"

# --- dead letters: one stream per service, owned by that service ----------------------------------------------
DEAD_LETTER_PREFIX: Final = "mtm.dlq"

# --- request/reply (core NATS) ----------------------------------------------------------------------------------
CLAIM_REVIEW_TASK: Final = "mtm.cmd.review.claim.v1"
COMPLETE_REVIEW_TASK: Final = "mtm.cmd.review.complete.v1"
LIST_REVIEW_TASKS: Final = "mtm.query.review.tasks.v1"
GET_REVIEW_TASK: Final = "mtm.query.review.task.v1"
ANSWER_REFERRAL: Final = "mtm.cmd.referral.answer.v1"
LIST_REFERRALS: Final = "mtm.query.referral.list.v1"
GET_MEDICATION_LIST: Final = "mtm.query.reconciliation.medlist.v1"
PATIENT_KEYS: Final = "mtm.keys.patient.v1"
"""Services ask reconciliation for patients' event keys here (request/reply between services only)."""
PATIENT_KEYS_MADE: Final = "mtm.keys.made.v1"
"""Reconciliation announces the keys it has just made here (core NATS, never stored, services only), so the services
about to read a new patient's first events have the key without asking for it."""
ERASE_PATIENT: Final = "mtm.admin.reconciliation.erase.v1"
GET_MEDICATION_HISTORY: Final = "mtm.query.reconciliation.history.v1"
ACKNOWLEDGE_REFERRAL: Final = "mtm.cmd.referral.acknowledge.v1"
GET_REFERRAL: Final = "mtm.query.referral.get.v1"
LIST_WORKLIST: Final = "mtm.query.review.worklist.v1"
RELEASE_REVIEW_TASK: Final = "mtm.cmd.review.release.v1"
REASSIGN_REVIEW_TASK: Final = "mtm.cmd.review.reassign.v1"
OVERRIDE_ALERT: Final = "mtm.cmd.review.override_alert.v1"
RECORD_RECOMMENDATION_OUTCOME: Final = "mtm.cmd.review.recommendation_outcome.v1"
RECORD_ACTION_PLAN_DELIVERY: Final = "mtm.cmd.review.action_plan_delivery.v1"
GET_REVIEW_RECORD: Final = "mtm.query.review.record.v1"
GET_ACTION_PLAN: Final = "mtm.query.review.action_plan.v1"
LIST_ALERT_RULE_STATS: Final = "mtm.query.review.alert_rule_stats.v1"
LIST_NOTIFICATIONS: Final = "mtm.query.notify.list.v1"
DISENROLL_MEMBER: Final = "mtm.cmd.program.disenroll.v1"
GET_PROGRAM_STATUS: Final = "mtm.query.program.status.v1"
GET_CMS_REPORT: Final = "mtm.query.program.cms-report.v1"
GET_ALERT_REPORT: Final = "mtm.query.program.alert-report.v1"

_UNSAFE_TOKEN = re.compile(r"[.*>\s%]")


def patient_of_subject(subject: str) -> str:
    """The patient id of a patient-log subject (`mtm.patient.<partition>.<patient>.<event>.v<n>`), unescaped."""
    token = subject.split(".")[3]
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), token)


def subject_token(value: str) -> str:
    """Make an id safe as one subject token: `.`, `*`, `>`, `%` and whitespace are percent-encoded."""
    return _UNSAFE_TOKEN.sub(lambda m: f"%{ord(m.group()):02X}", value)


def patient_partition(patient_id: str) -> int:
    """CRC-32 (IEEE) of the UTF-8 patient id modulo 16: the same in every language, so any producer can compute it."""
    return zlib.crc32(patient_id.encode("utf-8")) % PATIENT_PARTITIONS


def patient_subject(patient_id: str, event_name: str, version: int = 1) -> str:
    """`mtm.patient.<partition>.<patient>.<event>.v<version>`: per-patient order, partitions for scaling out."""
    partition = patient_partition(patient_id)
    return f"{PATIENT_EVENTS_PREFIX}.{partition}.{subject_token(patient_id)}.{event_name}.v{version}"


def event_subject(event: EventEnvelope) -> str:
    return patient_subject(event.patient_id, event.EVENT_NAME, event.schema_version)


def event_filter(event_cls: type[EventEnvelope]) -> str:
    """Subject filter that matches one event, every stored version of it, for every patient."""
    return f"{PATIENT_EVENTS_PREFIX}.*.*.{event_cls.EVENT_NAME}.*"


def partition_filters(event_cls: type[EventEnvelope], partitions: Iterable[int]) -> tuple[str, ...]:
    """Subject filters that match one event (any version) for the patients of the given partitions."""
    return tuple(f"{PATIENT_EVENTS_PREFIX}.{p}.*.{event_cls.EVENT_NAME}.*" for p in sorted(set(partitions)))


def event_name_of_subject(subject: str) -> str:
    """The event token of a patient-log subject: `mtm.patient.3.p1.review_task_claimed.v1` → `review_task_claimed`."""
    return subject.rsplit(".", 2)[-2]


def patient_filter(patient_id: str) -> str:
    """Subject filter of everything that happened to one patient."""
    return f"{PATIENT_EVENTS_PREFIX}.{patient_partition(patient_id)}.{subject_token(patient_id)}.>"


def physician_inbox_subject(physician_id: str) -> str:
    return f"{PHYSICIAN_INBOX_PREFIX}.{subject_token(physician_id)}"


def dead_letter_stream(service: str) -> str:
    return f"DEAD_LETTERS_{service.upper()}"


def dead_letter_subject(service: str, consumer: str) -> str:
    return f"{DEAD_LETTER_PREFIX}.{service}.{subject_token(consumer)}"
