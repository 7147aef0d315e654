"""Operator messages every service answers over request/reply: its status (readiness) and projection rebuilds."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import AwareDatetime, Field

from mtm.contracts.envelope import Frozen

SERVICES: tuple[str, ...] = ("reconciliation", "review", "referral", "notify", "program")


def status_subject(service: str) -> str:
    """Every running instance of `service` answers `GetServiceStatus` here (no queue group: any instance may reply)."""
    return f"mtm.admin.{service}.status.v1"


def rebuild_subject(service: str) -> str:
    """One instance of `service` (queue group) starts a `RebuildProjection` and replies at once."""
    return f"mtm.admin.{service}.rebuild.v1"


def rebuild_progress_subject(service: str, rebuild_id: uuid.UUID) -> str:
    """Core NATS subject on which a running rebuild reports `RebuildProgress` until it is done or failed."""
    return f"mtm.admin.{service}.rebuild.{rebuild_id}.progress"


class GetServiceStatus(Frozen):
    schema_version: Literal[1] = 1


class ServiceStatus(Frozen):
    """What one instance of a service reports about itself: ready only when it holds its consumers."""

    service: str
    instance: str = Field(description="host:pid of the replying process.")
    ready: bool
    reasons: tuple[str, ...] = Field(default=(), description="Why the instance is not ready, when it is not.")
    consumers: tuple[str, ...] = Field(default=(), description="Durable consumers this instance is pulling from.")
    started_at: AwareDatetime


class RebuildProjection(Frozen):
    """Rebuild the service's projection from the patient log into fresh tables, then swap them in."""

    rebuild_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    schema_version: Literal[1] = 1


RebuildPhase = Literal["started", "replaying", "catching-up", "swapped", "failed"]


class ErasePatient(Frozen):
    """Forget a patient everywhere (an admin's command to reconciliation, the keeper of patients' keys)."""

    command_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    patient_id: str = Field(pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    reason: str = Field(min_length=1, max_length=200)
    schema_version: Literal[1] = 1


class GetPatientKeys(Frozen):
    """A service asks for the keys of the patients whose events it reads or writes (one request per batch)."""

    patient_ids: tuple[str, ...] = Field(min_length=1, max_length=1000)
    create: bool = Field(default=False, description="Make a key for a patient who has none yet (writers only).")
    schema_version: Literal[1] = 1


class PatientKey(Frozen):
    key_id: str
    key_base64: str


class PatientKeys(Frozen):
    keys: dict[str, PatientKey] = {}
    erased: tuple[str, ...] = ()
    missing: tuple[str, ...] = Field(default=(), description="Patients with no key yet (nothing was written).")


class RebuildProgress(Frozen):
    rebuild_id: uuid.UUID
    service: str
    phase: RebuildPhase
    applied: int = Field(default=0, description="Events applied to the new tables so far.")
    total: int = Field(default=0, description="Events in the log the rebuild must read (grows while it runs).")
    events_per_s: float = 0.0
    message: str = ""
