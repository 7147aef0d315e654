"""R4: hypothesis-generated hostile input on every subject mtm reads, while valid discharges keep flowing.

The subjects come from one table, `targets()`, built from the services' own handler tables: every intake a
reaction reads from a stream other than the patient log, every patient-log subject a consumer reads, every
command and query (with its model and the roles allowed), and each service's admin subjects. A subject a service
adds shows up here by itself; `TEMPLATES` only gives it a valid body to start mutating from (else `{}`).

Each input is built to be refused, and what should happen is decided before it is sent:

* on an intake or the patient log, the readers' own parsers (the services' `parse` functions, run here) must all
  reject it (hypothesis discards inputs they accept): every consumer that reads the subject must park it on its
  dead-letter stream with a reason, matched by stream sequence;
* on a command or query, the reply must be `unauthorized` (no valid token: missing, garbage, foreign key,
  expired, or naming no valid actor), `forbidden` (a role the table does not allow) or `invalid` (the body fails
  the model), in that order, with a message; a valid request from an allowed actor for nothing in particular may
  be `accepted`, `not_found` or `conflict` (or `invalid` where the command is checked against the task it names,
  `CHECKED_AGAINST_THE_TASK`), never `error`;
* on a status subject, any request gets the service's status.

Each input comes from a user the access table lets send on its subject (`sender_of`): an intake's integrator
(the hospital, the pharmacy), the service that decides a log event (as if it were compromised), the mtm command's
user for requests. Where that user may not publish on the input's subject after all, NATS refuses it, which is
itself the refusal wanted (`Sent.denied`), predicted from the same table.

Shapes: any JSON value, fields replaced by hostile ids (`.`, `*`, `>`, spaces, newlines, NUL, other Unicode),
wrong types, missing fields, lists and texts at and beyond `mtm.contracts.limits`, bodies near the 1 MiB payload,
nesting up to 100,000 deep, other encodings (UTF-16/32, Latin-1, invalid UTF-8, BOM, NUL bytes), truncated JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import inspect
import itertools
import json
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jwt
from hypothesis import HealthCheck, Phase, assume, given, seed, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from support import actors
from support.jetstream import wait_for

from faults import REPO_ROOT
from faults.audit import Audit, dead_letter_counts, dead_letters
from faults.clinic import Clinic, ClinicPlan
from faults.report import Result, must_be_zero, reported
from faults.scenarios import Say, clinic_on_stack, flow_figures, health_figures, settle_and_audit
from faults.stack import OPERATOR, Stack
from mtm.contracts import CommandReply
from mtm.contracts.admin import (
    SERVICES,
    ErasePatient,
    RebuildProjection,
    ServiceStatus,
    rebuild_subject,
    status_subject,
)
from mtm.contracts.dead_letter import GetDeadLetter, ListDeadLetters, RedriveDeadLetter, dead_letters_subject
from mtm.contracts.identity import Actor
from mtm.contracts.limits import (
    MAX_ALERTS,
    MAX_CODE,
    MAX_MEDICATIONS,
    MAX_NOTE,
    MAX_RECOMMENDATION,
    MAX_RECOMMENDATIONS,
    MAX_TEXT,
    has_nul,
)
from mtm.contracts.subjects import (
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    DISCHARGE_INTAKE_SUBJECT,
    ERASE_PATIENT,
    FILL_INTAKE_SUBJECT,
    OVERRIDE_ALERT,
    PATIENT_EVENTS_STREAM,
    PATIENT_PARTITIONS,
    subject_token,
)
from mtm.platform.access import ACCESS, ADMIN, subject_matches
from mtm.platform.consumer import Delivery, InvalidMessage
from mtm.platform.crypto import KeyRing
from mtm.platform.identity import TokenIssuer, generate_keypair
from mtm.platform.reading import EventReader

Kind = Literal["intake", "event", "request", "status"]
SAMPLES = REPO_ROOT / "contracts" / "samples"
# Bodies stay under NATS's 1 MiB payload with room for headers (a bigger one never leaves the client).
MAX_BODY = 1024 * 1024 - 8 * 1024
REQUEST_TIMEOUT_S = 30.0
PUBLISH_TIMEOUT_S = 30.0
BATCH = 25
SENDERS = 8
FOREIGN_PRIVATE_KEY, _ = generate_keypair()
VALID_ANSWERS = ("accepted", "not_found", "conflict")
FLOWS = "flows"
FILL_FLOWS = "fill flows"
# What a consumer logs when a message it read fails in its transaction (hostile input must be parked before that).
FAILED_TO_APPLY = "message failed; redelivery scheduled"
NAMESPACE = uuid.UUID("6d1f0c36-93a4-4c51-b7de-2a4c5e0f9d13")
FLOW_STAGES = ("discharge recorded", "medications reconciled", "review task created")
ROLES = ("pharmacist", "physician", "admin")
# What nats-server says (and nats-py hands the error callback) when a user publishes where it may not.
PUBLISH_REFUSED = re.compile(r'Permissions Violation for Publish to "(.*)"', re.IGNORECASE)
REFUSED_WITHIN_S = 5.0


# --- the table ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    durable: str
    parse: Callable[[Delivery], Any]


@dataclass(frozen=True)
class Target:
    """One subject mtm reads: how to address it, who reads it, and what a refusal looks like there."""

    name: str
    kind: Kind
    subject: str
    stream: str | None = None
    readers: tuple[Reader, ...] = ()
    model: type[BaseModel] | None = None
    roles: tuple[str, ...] = ()
    service: str = ""

    def __str__(self) -> str:
        return self.name


def _native_discharge() -> dict[str, Any]:
    return json.loads((SAMPLES / "transition_of_care_recorded.v1.json").read_text())


def _fhir_discharge() -> dict[str, Any]:
    from mtm.cli.demo import fhir_discharge

    return json.loads(fhir_discharge()[0])


def _recommendation() -> dict[str, Any]:
    return {"recommendation_id": str(uuid.uuid4()), "text": "Restart atorvastatin", "needs_prescriber": True}


# Where a template names a task or a patient, the input names a real one (R4 sets discharges aside for that, which
# nobody at the clinic touches) or a made-up one.
TASK = "\x02task\x02"
PATIENT = "\x02patient\x02"

# Valid bodies to start from, by subject (events: by event name, from contracts/samples). Anything else gets `{}`.
TEMPLATES: dict[str, Callable[[], dict[str, Any]]] = {
    DISCHARGE_INTAKE_SUBJECT: _native_discharge,
    f"{DISCHARGE_INTAKE_SUBJECT}#fhir": _fhir_discharge,
    CLAIM_REVIEW_TASK: lambda: {"task_id": TASK},
    COMPLETE_REVIEW_TASK: lambda: {"task_id": TASK, "note": "Reviewed.", "recommendations": [_recommendation()]},
    "mtm.query.review.tasks.v1": lambda: {"status": "requested", "limit": 50, "offset": 0},
    "mtm.query.review.task.v1": lambda: {"task_id": TASK},
    "mtm.cmd.referral.answer.v1": lambda: {"referral_id": str(uuid.uuid4()), "decision": "accepted", "note": "ok"},
    "mtm.query.referral.list.v1": lambda: {"physician_id": "dr-1", "status": "requested", "limit": 10},
    "mtm.query.reconciliation.medlist.v1": lambda: {"patient_id": PATIENT, "format": "fhir"},
    "mtm.query.reconciliation.history.v1": lambda: {"patient_id": PATIENT, "limit": 20},
    FILL_INTAKE_SUBJECT: lambda: json.loads((SAMPLES / "medication_dispensed.v1.json").read_text()),
    "mtm.cmd.review.release.v1": lambda: {"task_id": TASK, "reason": "Out sick."},
    "mtm.cmd.review.reassign.v1": lambda: {"task_id": TASK, "pharmacist_id": "rph-2"},
    "mtm.cmd.review.override_alert.v1": lambda: {
        "task_id": TASK,
        "alert": 0,
        "reason_code": "will-monitor",
        "reason": "Checked with the patient.",
    },
    "mtm.cmd.review.recommendation_outcome.v1": lambda: {
        "recommendation_id": str(uuid.uuid4()),
        "outcome": "accepted",
        "note": "Prescriber agreed.",
    },
    "mtm.cmd.review.action_plan_delivery.v1": lambda: {
        "task_id": TASK,
        "method": "mail",
        "delivered_on": datetime.now(UTC).date().isoformat(),
    },
    "mtm.query.review.record.v1": lambda: {"patient_id": PATIENT},
    "mtm.query.review.action_plan.v1": lambda: {"patient_id": PATIENT},
    "mtm.query.review.alert_rule_stats.v1": lambda: {"limit": 100, "offset": 0},
    "mtm.query.review.worklist.v1": lambda: {"limit": 50, "offset": 0, "status": "open", "overdue": False},
    "mtm.cmd.referral.acknowledge.v1": lambda: {"referral_id": str(uuid.uuid4())},
    "mtm.query.referral.get.v1": lambda: {"referral_id": str(uuid.uuid4())},
    "mtm.query.notify.list.v1": lambda: {"limit": 100, "offset": 0, "patient_id": PATIENT},
    "mtm.cmd.program.disenroll.v1": lambda: {
        "patient_id": PATIENT,
        "program_year": datetime.now(UTC).year,
        "reason": "opted-out",
    },
    "mtm.query.program.status.v1": lambda: {"patient_id": PATIENT},
    "mtm.query.program.cms-report.v1": lambda: {"year": datetime.now(UTC).year},
    "mtm.query.program.alert-report.v1": lambda: {"since": None},
    # Erasure names made-up patients only: erasing one the run follows would take its events out of the audit.
    ERASE_PATIENT: lambda: {"patient_id": f"p-erased-{uuid.uuid4().hex[:12]}", "reason": "erasure request"},
    **{rebuild_subject(service): lambda: {"rebuild_id": str(uuid.uuid4())} for service in SERVICES},
    **{dead_letters_subject(service, "list"): lambda: {"after_sequence": 0, "limit": 50} for service in SERVICES},
    **{dead_letters_subject(service, "get"): lambda: {"sequence": 1, "body_limit": 4096} for service in SERVICES},
    **{dead_letters_subject(service, "redrive"): lambda: {"sequence": 1} for service in SERVICES},
}


def templates_for(target: Target) -> list[dict[str, Any]]:
    if target.kind == "event":
        sample = SAMPLES / f"{target.name.split(' ', 1)[0]}.v1.json"
        return [json.loads(sample.read_text())] if sample.exists() else [{}]
    found = [build() for key, build in TEMPLATES.items() if key.split("#", 1)[0] == target.subject]
    return found or [{}]


DEAD_LETTER_REQUESTS: dict[str, type[BaseModel]] = {
    "list": ListDeadLetters,
    "get": GetDeadLetter,
    "redrive": RedriveDeadLetter,
}


@cache
def definitions() -> dict[str, Any]:
    """Each service's definition as its bootstrap builds it (nothing connects until an app starts)."""
    found = {}
    for service in SERVICES:
        app = importlib.import_module(f"mtm.{service}.bootstrap").create_app()
        found[service] = app.runtime.definition  # type: ignore[attr-defined]
    return found


async def _no_keys(patient_ids: Any, create: bool) -> tuple[dict[str, Any], set[str]]:
    return {}, set()


def _event_parse(registry: Any, events: tuple[type[Any], ...]) -> Callable[[Delivery], Any]:
    """How a consumer of the patient log reads a message before reacting (`mtm.platform.service`): through an event
    reader, as one event class or as any of several. This reader holds no patient's key, which changes nothing for
    hostile events (sent in the clear, or sealed under a key no patient has); a fresh one each time, so a valid
    `PatientErased` the suite drew (and then discarded) is not remembered."""

    async def parse(delivery: Delivery) -> Any:
        reader = EventReader(registry, KeyRing(_no_keys))
        if len(events) == 1:
            return (await reader.read_as(events[0], delivery.subject, delivery.data))[0]
        value, _ = await reader.read(delivery.subject, delivery.data)
        if events and not isinstance(value, events):
            raise InvalidMessage(f"{type(value).__name__} is not among the events this reaction reads")
        return value

    return parse


def _readers(definition: Any) -> list[tuple[str, tuple[str, ...], Reader]]:
    """(stream, filter subjects, reader) of each durable consumer, with the parse step it runs first (reactions
    then decide, which may need the service's database: a hostile input must already fail to parse)."""
    reactions = {reaction.durable: reaction for reaction in definition.handlers.reactions}
    found = []
    for consumer in definition.consumers(EventReader(definition.registry, KeyRing(_no_keys))):
        if consumer.retiring:
            continue  # an earlier version's durable, drained on upgrade: a running stack has none
        reaction = reactions.get(consumer.durable)
        if reaction is not None and reaction.parse is not None:
            parse = reaction.parse
        else:
            parse = _event_parse(definition.registry, reaction.events if reaction is not None else ())
        found.append((consumer.stream, consumer.filter_subjects, Reader(consumer.durable, parse)))
    return found


def targets() -> list[Target]:
    """Every subject mtm reads, from the services' handler tables."""
    table: list[Target] = []
    by_subject: dict[tuple[str, str], list[Reader]] = defaultdict(list)
    for service, definition in definitions().items():
        for stream, filters, reader in _readers(definition):
            for subject in filters:
                by_subject[(stream, subject)].append(reader)
        handlers = definition.handlers
        for declared in (*handlers.commands, *handlers.queries):
            table.append(
                Target(
                    declared.subject,
                    "request",
                    declared.subject,
                    model=declared.model,
                    roles=tuple(declared.roles),
                    service=service,
                )
            )
        if definition.keeps_keys:
            table.append(
                Target(ERASE_PATIENT, "request", ERASE_PATIENT, model=ErasePatient, roles=("admin",), service=service)
            )
        for action, model in DEAD_LETTER_REQUESTS.items():
            subject = dead_letters_subject(service, action)
            table.append(Target(subject, "request", subject, model=model, roles=("admin",), service=service))
        table.append(Target(status_subject(service), "status", status_subject(service), service=service))
        table.append(
            Target(
                rebuild_subject(service),
                "request",
                rebuild_subject(service),
                model=RebuildProjection,
                roles=("admin",),
                service=service,
            )
        )
    for (stream, subject), readers in sorted(by_subject.items()):
        if stream == PATIENT_EVENTS_STREAM:
            name = f"{subject.split('.')[-2]} (patient log)"
            table.append(Target(name, "event", subject, stream, tuple(readers)))
        else:
            table.append(Target(subject, "intake", subject, stream, tuple(readers)))
    return table


# --- inputs -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostileInput:
    target: Target
    subject: str
    body: bytes
    headers: dict[str, str]
    shape: str
    token: str = ""
    expect: tuple[str, ...] = ()
    """Requests: the outcomes that are right. Intake and events: the durables that must park it, or `FLOWS`."""
    patient: str = ""
    """A valid discharge's patient, whose review task must come out of it."""


@dataclass(frozen=True)
class Sent:
    item: HostileInput
    stream: str | None = None
    seq: int | None = None
    duplicate: bool = False
    reply: str | None = None
    message: str = ""
    error: str | None = None
    denied: bool = False
    """NATS refused it: its sender may not publish on the subject, as the access table predicted."""


def sender_of(target: Target) -> str:
    """The user hostile input on `target` comes from: one the access table lets send there (an intake's
    integrator, the service that decides the event, the mtm command for requests); the admin for an event no
    service decides, which nobody else could put on the log."""
    if target.kind == "intake":
        return next((i.name for i in ACCESS.integrators if i.intake == target.subject), OPERATOR)
    if target.kind == "event":
        return next((g.service for g in ACCESS.services if g.may_publish(target.subject)), ADMIN)
    return OPERATOR


@cache
def publish_allowed(user: str) -> tuple[str, ...]:
    """The subjects the access table lets `user` publish on (the admin: everything)."""
    if user in ACCESS.admins:
        return (">",)
    grants = {
        **{g.service: g.permissions() for g in ACCESS.services},
        **{t.name: t.permissions() for t in ACCESS.tools},
        **{i.name: i.permissions() for i in ACCESS.integrators},
    }
    publish = grants[user]["publish"]
    assert isinstance(publish, dict)
    return tuple(publish["allow"])


def may_publish(user: str, subject: str) -> bool:
    """Whether the server lets `user` publish on `subject`."""
    return any(subject_matches(pattern, subject) for pattern in publish_allowed(user))


class Senders:
    """A connection for each user hostile input comes from, and the publications NATS refused each of them."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self.connections: dict[str, Any] = {}
        self.refused: dict[str, set[str]] = defaultdict(set)

    async def open(self, users: set[str]) -> Senders:
        for user in sorted(users):

            async def on_error(exc: Exception, user: str = user) -> None:
                found = PUBLISH_REFUSED.search(str(exc))
                if found:
                    self.refused[user].add(found.group(1))

            self.connections[user] = await self._stack.connect(f"faults-hostile-{user}", user=user, error_cb=on_error)
        return self

    async def refused_within(self, user: str, subject: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while subject not in self.refused[user]:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self) -> None:
        for nc in self.connections.values():
            with contextlib.suppress(Exception):
                await nc.close()


HOSTILE_CHARS = (".", "*", ">", " ", "\n", "\r", "\t", "\x00", "\x7f", "\u2028", "\ufeff", "%", "/", "\\", '"', "é")
ID_PARTS = st.from_regex(r"[A-Za-z0-9\-]{0,12}", fullmatch=True)
hostile_ids = st.one_of(
    st.builds(lambda a, c, b: a + c + b, ID_PARTS, st.text(st.sampled_from(HOSTILE_CHARS), min_size=1), ID_PARTS),
    st.text(max_size=80),
    st.integers(65, 300).map(lambda n: "a" * n),
    st.just(""),
)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    hostile_ids,
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
# Sizes at and beyond the contracts' limits; the big ones (near the 1 MiB payload) drawn rarely, so the run stays
# within minutes and its stores within a few hundred megabytes.
LENGTHS = st.one_of(
    st.sampled_from((MAX_CODE, MAX_CODE + 1, 65, MAX_TEXT, MAX_TEXT + 1, MAX_RECOMMENDATION + 1, MAX_NOTE + 1)),
    st.sampled_from((MAX_NOTE * 2, 65_536)),
    st.integers(1, 20).map(lambda n: 45_000 * n),
)
COUNTS = st.one_of(
    st.sampled_from((MAX_RECOMMENDATIONS, MAX_RECOMMENDATIONS + 1, MAX_MEDICATIONS, MAX_MEDICATIONS + 1)),
    st.sampled_from((MAX_ALERTS + 1, 1_000)),
    st.integers(1, 10).map(lambda n: 1_000 * n),
)
DEPTHS = st.one_of(st.integers(2, 300), st.sampled_from((1_000, 10_000, 100_000)))


@dataclass(frozen=True)
class Pool:
    """Real resources hostile requests may name: the tasks and patients of the discharges set aside."""

    tasks: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()


def filled(draw: st.DrawFn, value: Any, pool: Pool) -> Any:
    """The template with each task or patient placeholder replaced by a real one or a made-up one."""
    if isinstance(value, dict):
        return {key: filled(draw, item, pool) for key, item in value.items()}
    if isinstance(value, list):
        return [filled(draw, item, pool) for item in value]
    if value == TASK:
        return draw(st.sampled_from(pool.tasks)) if pool.tasks and draw(st.booleans()) else str(draw(st.uuids()))
    if value == PATIENT:
        return draw(st.sampled_from(pool.patients)) if pool.patients and draw(st.booleans()) else "p-unknown"
    return value


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            yield from _paths(item, (*prefix, index))


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def _replace(template: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    body = copy.deepcopy(template)
    parent = _get(body, path[:-1])
    parent[path[-1]] = new
    return body


def _delete(template: Any, path: tuple[Any, ...]) -> Any:
    body = copy.deepcopy(template)
    parent = _get(body, path[:-1])
    del parent[path[-1]]
    return body


def nested(depth: int, kind: str) -> str:
    return ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


@st.composite
def bodies(draw: st.DrawFn, templates: list[dict[str, Any]], pool: Pool) -> tuple[str, bytes]:
    """(shape, body): one template mutated in one hostile way."""
    template = filled(draw, draw(st.sampled_from(templates)), pool)
    paths = list(_paths(template))
    shape = draw(
        st.sampled_from(
            ("field", "missing", "long text", "long list", "nesting", "encoding", "truncated", "any json", "bytes")
        )
    )
    if shape == "field":
        path = draw(st.sampled_from(paths[1:] or paths))
        return shape, json.dumps(_replace(template, path, draw(json_values))).encode()
    if shape == "missing":
        deletable = [p for p in paths if p and isinstance(_get(template, p[:-1]), dict)]
        if not deletable:
            return "any json", json.dumps(draw(json_values)).encode()
        return shape, json.dumps(_delete(template, draw(st.sampled_from(deletable)))).encode()
    if shape == "long text":
        strings = [p for p in paths if isinstance(_get(template, p), str)] or paths[:1]
        text = draw(st.sampled_from(("x", "é", "\x00", " ", "*", "💊"))) * draw(LENGTHS)
        return shape, json.dumps(_replace(template, draw(st.sampled_from(strings)), text)).encode()
    if shape == "long list":
        lists = [p for p in paths if isinstance(_get(template, p), list)]
        path = draw(st.sampled_from(lists)) if lists else draw(st.sampled_from(paths))
        current = _get(template, path)
        element = current[0] if isinstance(current, list) and current else draw(json_leaves)
        return shape, json.dumps(_replace(template, path, [element] * draw(COUNTS))).encode()
    if shape == "nesting":
        deep = nested(draw(DEPTHS), draw(st.sampled_from(("list", "object"))))
        marker = "\x01nested\x01"
        text = json.dumps(_replace(template, draw(st.sampled_from(paths)), marker))
        return shape, text.replace(json.dumps(marker), deep).encode()
    text = json.dumps(template, ensure_ascii=False)
    if shape == "encoding":
        how = draw(st.sampled_from(("utf-16", "utf-32", "utf-16-be", "latin-1", "bom", "invalid utf-8", "nul")))
        if how in ("utf-16", "utf-32", "utf-16-be"):
            return f"{shape} {how}", text.encode(how)
        if how == "latin-1":
            return f"{shape} {how}", (text[:-1] + ', "x": "café"}' if text.endswith("}") else text + "é").encode(
                "latin-1", "replace"
            )
        if how == "bom":
            return f"{shape} {how}", b"\xef\xbb\xbf" + text.encode()
        at = draw(st.integers(0, len(text)))
        junk = b"\x00" if how == "nul" else draw(st.sampled_from((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88")))
        return f"{shape} {how}", text[:at].encode() + junk + text[at:].encode()
    if shape == "truncated":
        return shape, text.encode()[: draw(st.integers(0, max(0, len(text.encode()) - 1)))]
    if shape == "any json":
        return shape, json.dumps(draw(json_values)).encode()
    return shape, draw(st.binary(max_size=512))


def token_kinds(target: Target) -> st.SearchStrategy[tuple[str, str | None]]:
    """(kind, Authorization header or None): none, garbage, a foreign key, expired, or signed by the trusted key
    for a role and practitioner id (hostile ones too; whether that names a valid actor is the contract's call)."""
    allowed = st.sampled_from(target.roles) if target.roles else st.sampled_from(ROLES)
    benign = st.builds(
        lambda role, pid: (f"role:{role}", "Bearer " + signed_token(role, "u-1", pid)),
        allowed,
        st.one_of(st.none(), st.sampled_from(("dr-1", "rph-1", "a.b"))),
    )
    # Signed by the trusted key for a role the subject allows, naming a hostile practitioner id: whether that is an
    # actor is the contract's call, and what it may do with a valid body is what it tests.
    signed = st.builds(
        lambda role, pid: (f"role:{role}", "Bearer " + signed_token(role, "u-1", pid)),
        st.one_of(allowed, st.sampled_from(ROLES)),
        hostile_ids,
    )
    hostile = st.one_of(
        st.just(("none", None)),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200).map(lambda t: ("garbage", t)),
        st.builds(lambda t: ("garbage", f"Bearer {t}"), st.from_regex(r"[A-Za-z0-9._\-]{0,300}", fullmatch=True)),
        st.just(("foreign key", "Bearer " + TokenIssuer(FOREIGN_PRIVATE_KEY).issue(Actor(user_id="u", role="admin")))),
        st.just(("expired", "Bearer " + expired_token())),
        st.builds(
            lambda role, user: ("bad claims", "Bearer " + signed_token(role, user, None)),
            st.text(max_size=20),
            hostile_ids,
        ),
    )
    # Half the requests come from an actor the subject allows, so the body is what gets tested.
    kinds = {"benign": benign, "signed": signed, "hostile": hostile}
    return st.sampled_from(("benign", "benign", "signed", "hostile")).flatmap(kinds.__getitem__)


def expired_token() -> str:
    issuer = TokenIssuer(actors.PRIVATE_KEY)
    return issuer.issue(Actor(user_id="u-1", role="admin"), now=datetime.now(UTC) - timedelta(hours=2))


def signed_token(role: str, user: str, practitioner: str | None) -> str:
    """Signed with the trusted key like a login's token, whatever the claims say (the issuer would refuse some)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(actors.PRIVATE_KEY.encode(), password=None)
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": "mtm",
        "aud": "mtm",
        "sub": user,
        "role": role,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(hours=8),
    }
    if practitioner is not None:
        claims["practitioner_id"] = practitioner
    return jwt.encode(claims, key, algorithm="EdDSA")  # type: ignore[arg-type]


def verified_actor(header: str | None) -> Actor | None:
    """The actor a service would accept from this header (the contract decides), or None."""
    from mtm.platform.identity import TokenVerifier, Unauthorized

    try:
        return TokenVerifier([actors.PUBLIC_KEY]).verify(header)
    except Unauthorized:
        return None


def parses(model: type[BaseModel], body: bytes) -> bool:
    """Whether a service would take the body: the contract's model, and no NUL anywhere in it."""
    if has_nul(body):
        return False
    try:
        model.model_validate_json(body)
    except (ValidationError, RecursionError, ValueError):
        return False
    return True


def rejected_by_every_reader(target: Target, subject: str, body: bytes) -> bool:
    """The services' own parsers, run here: True only when every reader of the subject refuses the body."""
    assert target.stream is not None
    delivery = Delivery(subject, target.stream, 1, 1, {}, body, raw=None)
    for reader in target.readers:
        try:
            result = reader.parse(delivery)
            if inspect.isawaitable(result):
                _loop().run_until_complete(result)
        except Exception:
            continue
        return False
    return True


_local = threading.local()


def _loop() -> asyncio.AbstractEventLoop:
    """An event loop of this thread's own for the readers' decode steps (hypothesis generates in worker threads)."""
    if getattr(_local, "loop", None) is None:
        _local.loop = asyncio.new_event_loop()
    return _local.loop


def event_subject_for(target: Target, patient: str, partition: str, version: str) -> str:
    """`mtm.patient.<partition>.<patient>.<event>.<version>` for the event the target's filter names."""
    event = target.subject.split(".")[4]
    return f"mtm.patient.{partition}.{subject_token(patient)}.{event}.{version}"


def readers_of(subject: str, all_targets: list[Target]) -> tuple[Reader, ...]:
    """Every reader whose filter matches the subject (a patient-log subject may be read by several services)."""
    return tuple(
        r for t in all_targets if t.kind in ("event", "intake") and matches(t.subject, subject) for r in t.readers
    )


def matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


# Text a person or a hospital system may well send: control characters, NUL, line and paragraph separators, a
# right-to-left override, combining marks, emoji. Within the contract's limits it must flow like any other.
nasty_text = st.text(
    st.one_of(
        st.sampled_from(
            ("\x00", "\t", "\n", "\r", "\x1b", "\u2028", "\u2029", "\u202e", "\u0301", "\ufeff", "💊", "*", ">")
        ),
        st.characters(codec="utf-8"),
    ),
    min_size=1,
    max_size=60,
)
_discharges = itertools.count()


FLOWING = (FLOWS, FILL_FLOWS)


@st.composite
def nasty_discharges(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(shape, patient, body): a native discharge for a new patient, some of its texts replaced by nasty ones."""
    body = _native_discharge()
    patient = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,12}", fullmatch=True)) + f"-n{next(_discharges)}"
    event_id = str(uuid.uuid5(NAMESPACE, f"nasty-discharge:{patient}"))
    body.update(id=event_id, correlation_id=event_id, subject=f"Patient/{patient}")
    body["data"]["patient"]["patient_id"] = patient
    texts = [p for p in _paths(body["data"]) if isinstance(_get(body["data"], p), str) and p[-1] != "patient_id"]
    for path in draw(st.lists(st.sampled_from(texts), min_size=1, max_size=6, unique=True)):
        body["data"] = _replace(body["data"], path, draw(nasty_text))
    return "valid discharge, nasty text", patient, json.dumps(body).encode()


@st.composite
def nasty_fills(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(shape, patient, body): a native fill for a new patient, some of its texts replaced by nasty ones."""
    body = json.loads((SAMPLES / "medication_dispensed.v1.json").read_text())
    patient = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,12}", fullmatch=True)) + f"-f{next(_discharges)}"
    event_id = str(uuid.uuid5(NAMESPACE, f"nasty-fill:{patient}"))
    body.update(id=event_id, correlation_id=event_id, subject=f"Patient/{patient}")
    texts = [p for p in _paths(body["data"]) if isinstance(_get(body["data"], p), str)]
    for path in draw(st.lists(st.sampled_from(texts), min_size=1, max_size=4, unique=True)):
        body["data"] = _replace(body["data"], path, draw(nasty_text))
    return "valid fill, nasty text", patient, json.dumps(body).encode()


# Shares of the inputs by kind, so the one intake weighs as much as the many commands; each kind's share is split
# evenly between its subjects.
KIND_SHARES: dict[str, float] = {"intake": 0.30, "event": 0.25, "request": 0.35, "status": 0.10}


def quotas(all_targets: list[Target], count: int) -> list[tuple[Target, int]]:
    """How many inputs each subject gets out of `count` (at least one each)."""
    shares = {kind: share for kind, share in KIND_SHARES.items() if any(t.kind == kind for t in all_targets)}
    total = sum(shares.values())
    found = []
    for target in all_targets:
        same = sum(1 for t in all_targets if t.kind == target.kind)
        found.append((target, max(1, round(count * shares[target.kind] / total / same))))
    return found


@st.composite
def hostile_inputs(draw: st.DrawFn, target: Target, all_targets: list[Target], pool: Pool = Pool()) -> HostileInput:
    nasty = {DISCHARGE_INTAKE_SUBJECT: (nasty_discharges, FLOWS), FILL_INTAKE_SUBJECT: (nasty_fills, FILL_FLOWS)}
    if target.subject in nasty and draw(st.integers(0, 4)) == 0:
        build, flows = nasty[target.subject]
        shape, patient, body = draw(build())
        if not rejected_by_every_reader(target, target.subject, body):
            return HostileInput(target, target.subject, body, {}, shape, expect=(flows,), patient=patient)
        shape = "nasty text beyond the contract"
    else:
        shape, body = draw(bodies(templates_for(target), pool))
    if len(body) > MAX_BODY:
        body = body[:MAX_BODY]
        shape += " (cut at the payload limit)"
    if target.kind in ("intake", "event"):
        subject = target.subject
        if target.kind == "event":
            patient = draw(st.one_of(hostile_ids.filter(lambda t: t.strip() != ""), ID_PARTS.filter(bool)))
            patient = "".join(ch for ch in patient if ch.isprintable() and not ch.isspace()) or "x"
            partition = draw(st.one_of(st.integers(0, PATIENT_PARTITIONS - 1).map(str), st.sampled_from(("99", "x"))))
            subject = event_subject_for(target, patient, partition, draw(st.sampled_from(("v1", "v2", "v0"))))
        readers = readers_of(subject, all_targets)
        assume(
            rejected_by_every_reader(Target(target.name, target.kind, subject, target.stream, readers), subject, body)
        )
        headers = {}
        if draw(st.booleans()):
            headers["Nats-Msg-Id"] = draw(
                st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60)
            )
        return HostileInput(target, subject, body, headers, shape, expect=tuple(sorted({r.durable for r in readers})))
    kind, header = draw(token_kinds(target))
    headers = {"Authorization": header} if header is not None else {}
    if target.kind == "status":
        return HostileInput(target, target.subject, body, headers, shape, kind, ("status",))
    assert target.model is not None
    valid_body = draw(st.booleans())
    if valid_body:
        template = filled(draw, draw(st.sampled_from(templates_for(target))), pool)
        shape, body = "valid body", json.dumps(template).encode()
    expect = expected_reply(target, header, body)
    # A real rebuild or redrive is not hostile (and a redriven hostile message would be parked a second time).
    assume(not ("accepted" in expect and target.model in (RebuildProjection, RedriveDeadLetter)))
    return HostileInput(target, target.subject, body, headers, shape, kind, expect)


def expected_reply(target: Target, header: str | None, body: bytes) -> tuple[str, ...]:
    """What a service must answer: the token is checked first, then the role, then the body."""
    assert target.model is not None
    actor = verified_actor(header)
    if actor is None:
        return ("unauthorized",)
    if actor.role not in target.roles:
        return ("forbidden",)
    if not parses(target.model, body):
        return ("invalid",)
    return VALID_ANSWERS + CHECKED_AGAINST_THE_TASK.get(target.subject, ())


# Commands whose valid body may still be `invalid` for the task it names (with the reason): an alert index beyond
# the task's alerts, a CMR completed without its documentation, recommendations for a prescriber nobody names.
CHECKED_AGAINST_THE_TASK: dict[str, tuple[str, ...]] = {
    COMPLETE_REVIEW_TASK: ("invalid",),
    OVERRIDE_ALERT: ("invalid",),
}


# The characters the brief of every id names, and a few more a person or system may put in one.
ID_CHARACTERS = (".", "*", ">", " ", "\n", "\x00", "\t", "\u2028", "%", "é")


def actor_matrix(all_targets: list[Target], pool: Pool) -> list[HostileInput]:
    """Every command and query, with a valid body naming a real task or patient, from a token the trusted key signed
    for each role it allows, naming a practitioner id with each of `ID_CHARACTERS` (hypothesis may well never pair
    them: this does, every run)."""
    found = []
    for target in all_targets:
        if target.kind != "request" or target.model in (RebuildProjection, RedriveDeadLetter):
            continue
        for template in templates_for(target):
            for role in target.roles:
                for n, char in enumerate(ID_CHARACTERS):
                    # A task of its own per character: the first pharmacist to claim one keeps it.
                    body = json.dumps(_fill_first(template, pool, n)).encode()
                    header = "Bearer " + signed_token(role, "u-1", f"id{char}1")
                    expect = expected_reply(target, header, body)
                    shape = f"practitioner id with {char!r}"
                    found.append(
                        HostileInput(target, target.subject, body, {"Authorization": header}, shape, role, expect)
                    )
    return found


def _fill_first(value: Any, pool: Pool, n: int) -> Any:
    if isinstance(value, dict):
        return {key: _fill_first(item, pool, n) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill_first(item, pool, n) for item in value]
    if value == TASK:
        return pool.tasks[n % len(pool.tasks)] if pool.tasks else str(uuid.uuid4())
    if value == PATIENT:
        return pool.patients[n % len(pool.patients)] if pool.patients else "p-unknown"
    return value


def generate(
    target: Target, all_targets: list[Target], count: int, run_seed: int, pool: Pool = Pool()
) -> list[HostileInput]:
    """`count` inputs for one subject (hypothesis, generation phase only, reproducible from the seed).

    Hypothesis explores around what one run already generated, so a long run clumps; the suite runs many short
    ones (`BATCH`), each with a seed of its own.
    """
    found: list[HostileInput] = []

    @seed(run_seed)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_inputs(target, all_targets, pool))
    def collect(item: HostileInput) -> None:
        found.append(item)

    collect()
    return found


# --- the run --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostilePlan:
    inputs: int
    discharges: int
    aside: int = 20
    """Discharges whose tasks and patients hostile requests may name (nobody at the clinic touches them)."""
    seed: int = 20_261_130
    stall_s: float = 180.0


@dataclass
class Tally:
    sent: list[Sent] = field(default_factory=list)
    by_target: Counter[str] = field(default_factory=Counter)
    shapes: Counter[str] = field(default_factory=Counter)


async def send(senders: Senders, item: HostileInput) -> Sent:
    user = sender_of(item.target)
    nc = senders.connections[user]
    if not may_publish(user, item.subject):
        # Refused by the server without an answer: published without waiting for one, the refusal is awaited.
        await nc.publish(item.subject, item.body, headers=item.headers or None)
        await nc.flush()
        if await senders.refused_within(user, item.subject, REFUSED_WITHIN_S):
            return Sent(item, denied=True)
        return Sent(item, error=f"not refused by NATS ({user} may not publish here)")
    if item.target.kind in ("intake", "event"):
        try:
            ack = await nc.jetstream().publish(
                item.subject, item.body, headers=item.headers or None, timeout=PUBLISH_TIMEOUT_S
            )
        except Exception as exc:
            return Sent(item, error=f"publish failed ({type(exc).__name__})")
        return Sent(item, ack.stream, ack.seq, bool(ack.duplicate))
    try:
        msg = await nc.request(item.subject, item.body, timeout=REQUEST_TIMEOUT_S, headers=item.headers or None)
    except Exception as exc:
        return Sent(item, error=f"no reply ({type(exc).__name__})")
    if item.target.kind == "status":
        try:
            status = ServiceStatus.model_validate_json(msg.data)
        except ValidationError:
            return Sent(item, reply="not a status", message=msg.data[:200].decode(errors="replace"))
        return Sent(item, reply="status" if status.service == item.target.service else "another service's status")
    try:
        reply = CommandReply.model_validate_json(msg.data)
    except ValidationError:
        return Sent(item, reply="not a reply", message=msg.data[:200].decode(errors="replace"))
    return Sent(item, reply=reply.outcome, message=reply.message)


async def set_aside(clinic: Clinic, count: int, stall_s: float) -> Pool:
    """Discharges for hostile requests to name, once their review tasks exist."""
    for _ in range(count):
        await clinic.send_discharge(for_the_clinic=False)
    with contextlib.suppress(AssertionError):
        await wait_for(lambda: len(clinic.stats.others) >= count, timeout_s=stall_s, every_s=0.2)
    return Pool(tuple(clinic.stats.others), tuple(clinic.aside))


async def barrage(senders: Senders, clinic: Clinic, plan: HostilePlan, tally: Tally, say: Say) -> None:
    """Generate and send the inputs in batches, a valid discharge between every few."""
    all_targets = await asyncio.to_thread(targets)
    await senders.open({sender_of(target) for target in all_targets})
    pool = await set_aside(clinic, plan.aside, plan.stall_s)
    every = max(1, plan.inputs // max(1, plan.discharges))
    queue: asyncio.Queue[HostileInput | None] = asyncio.Queue(maxsize=200)

    async def sender() -> None:
        while (item := await queue.get()) is not None:
            tally.sent.append(await send(senders, item))

    workers = [asyncio.create_task(sender()) for _ in range(SENDERS)]
    produced = 0
    last_said = time.monotonic()
    # Every subject's quota in short batches, the subjects interleaved (a batch of each in turn).
    batches = []
    for index, (target, quota) in enumerate(quotas(all_targets, plan.inputs)):
        for start in range(0, quota, BATCH):
            batches.append((start, index, target, min(BATCH, quota - start)))
    for item in actor_matrix(all_targets, pool):
        await queue.put(item)
        tally.by_target[item.target.name] += 1
        tally.shapes["practitioner ids"] += 1
    for start, index, target, size in sorted(batches, key=lambda b: (b[0], b[1])):
        batch_seed = plan.seed + 1000 * index + start
        batch = await asyncio.to_thread(generate, target, all_targets, size, batch_seed, pool)
        for item in batch:
            await queue.put(item)
            tally.by_target[item.target.name] += 1
            tally.shapes[item.shape.split(" (")[0]] += 1
            produced += 1
            if produced % every == 0 and len(clinic.sent) < plan.discharges:
                await clinic.send_discharge()
        if time.monotonic() - last_said > 15:
            last_said = time.monotonic()
            say(f"{produced:,} hostile inputs sent; {clinic.progress()}")
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)
    while len(clinic.sent) < plan.discharges:
        await clinic.send_discharge()


async def wait_parked(nc: Any, expected: int, stall_s: float) -> int:
    """Until the dead-letter streams hold `expected` letters, or stop growing for `stall_s`."""
    last, moved = -1, time.monotonic()
    while True:
        total = sum((await dead_letter_counts(nc)).values())
        if total >= expected:
            return total
        if total != last:
            last, moved = total, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            return total
        await asyncio.sleep(1.0)


async def rebuild_all(nc: Any) -> dict[str, str]:
    """Every service rebuilds its tables from a log that now holds hostile events (as an admin asks)."""
    import io

    from mtm.cli.rebuild import rebuild_one

    phases = {}
    for service in SERVICES:
        try:
            report = await rebuild_one(nc, service, actors.token("ops", "admin"), io.StringIO())
            phases[service] = report.phase
        except Exception as exc:
            phases[service] = f"failed: {exc}"
    return phases


async def r4_hostile(plan: HostilePlan, work_dir: Path, say: Say) -> Result:
    result = Result("R4", f"{plan.inputs:,} hostile inputs on every subject, {plan.discharges:,} valid discharges")
    tally = Tally()
    clinic_plan = ClinicPlan(discharges=plan.discharges)
    async with clinic_on_stack(work_dir, clinic_plan) as (stack, clinic, receiver):
        pids = stack.pids()
        senders = Senders(stack)
        nc = await stack.connect("faults-dead-letters")
        try:
            await barrage(senders, clinic, plan, tally, say)
            say(f"{len(tally.sent):,} hostile inputs sent; waiting for the valid flow and the dead letters")
            done = await clinic.wait_done(stall_s=plan.stall_s, check=stack.check_alive, say=say)
            published = [s for s in tally.sent if s.seq is not None and not s.duplicate]
            expected_letters = sum(len(s.item.expect) for s in published if s.item.expect[0] not in FLOWING)
            await wait_parked(nc, expected_letters, plan.stall_s)
            letters = await dead_letters(nc)
        finally:
            await nc.close()
            await senders.close()
        others = {*clinic.aside, *(s.item.patient for s in tally.sent if s.item.patient)}
        found = await settle_and_audit(stack, clinic, receiver, result, others)
        exited = [name for name in SERVICES if not stack.services.alive(name) or stack.pids()[name] != pids[name]]  # type: ignore[union-attr]
        health = await health_figures("r4", stack, clinic, restarts_allowed=False)
        failed_to_apply = sum(stack.log_lines(FAILED_TO_APPLY).values())
        operator = await stack.connect("faults-rebuild", user=OPERATOR)
        try:
            rebuilt = await rebuild_all(operator)
        finally:
            await operator.close()
        verdict = classify(tally, letters, found)
        result.details.update(verdict.details)
        result.details["rebuilds"] = rebuilt
        result.details["done"] = done
        result.details["inputs_by_subject"] = dict(tally.by_target)
        result.details["inputs_by_shape"] = dict(tally.shapes)
        requests = [s for s in tally.sent if s.item.target.kind in ("request", "status")]
        result.add(
            reported("r4_inputs", "hostile inputs sent", len(tally.sent), count=len(tally.by_target), of="subjects"),
            reported(
                "r4_denied_by_nats",
                "refused by NATS (the sender may not publish there)",
                verdict.denied,
                count=len(tally.sent),
                of="inputs",
            ),
            must_be_zero(
                "r4_not_parked",
                "hostile messages not parked by every reader, with a reason",
                verdict.not_parked,
                len(published),
                "published to an intake or the log",
            ),
            must_be_zero(
                "r4_wrong_replies",
                "requests not refused as expected (or no reply)",
                verdict.wrong_replies,
                len(requests),
                "requests",
            ),
            must_be_zero("r4_error_replies", "replies `error`", verdict.errors, len(requests), "requests"),
            must_be_zero(
                "r4_valid_parked", "valid messages dead-lettered", verdict.valid_parked, len(letters), "letters"
            ),
            must_be_zero(
                "r4_nasty_not_flowed",
                "valid discharges and fills with nasty text that did not flow (one review task; one fill recorded)",
                verdict.not_flowed,
                verdict.flowing,
                "sent",
            ),
            must_be_zero("r4_service_exits", "service processes that exited", len(exited), len(SERVICES), "services"),
            must_be_zero(
                "r4_failed_to_apply",
                "accepted messages that then failed to apply (logged)",
                failed_to_apply,
                len(published),
                "published",
            ),
            must_be_zero(
                "r4_rebuilds_failed",
                "rebuilds that failed on the hostile log",
                sum(1 for phase in rebuilt.values() if phase != "swapped"),
                len(SERVICES),
                "services",
            ),
            *flow_figures("r4", found, clinic, dead_letters_expected=True),
            *health,
        )
    return result


@dataclass
class Verdict:
    flowing: int = 0
    not_flowed: int = 0
    not_parked: int = 0
    wrong_replies: int = 0
    errors: int = 0
    valid_parked: int = 0
    denied: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def classify(tally: Tally, letters: list[Any], found: Audit) -> Verdict:
    """Each input against what should have happened to it; examples of what did not (ids and reasons only)."""
    verdict = Verdict()
    parked: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    for letter in letters:
        parked[(letter.original_stream or "", letter.original_sequence or 0)][letter.consumer] = letter.reason
    hostile_keys = set()
    examples: dict[str, list[str]] = defaultdict(list)
    reasons: Counter[str] = Counter()
    replies: Counter[str] = Counter()
    for sent in tally.sent:
        item = sent.item
        if sent.denied:
            verdict.denied += 1  # the refusal wanted, by the server before any service saw it
            continue
        if item.target.kind in ("intake", "event"):
            if sent.error is not None:
                verdict.not_parked += 1
                examples["not published"].append(f"{item.target}: {sent.error}")
                continue
            if sent.duplicate:
                continue  # the server dropped it as a resend of an earlier message id: nothing to park
            key = (sent.stream or "", sent.seq or 0)
            if item.expect == (FLOWS,):
                verdict.flowing += 1
                through = [len(found.stages[stage].found.get(item.patient, ())) for stage in FLOW_STAGES]
                if through != [1] * len(FLOW_STAGES):
                    verdict.not_flowed += 1
                    examples["valid discharge did not flow"].append(f"seq {sent.seq}: {through} ({item.shape})")
                continue
            if item.expect == (FILL_FLOWS,):
                verdict.flowing += 1
                recorded = found.dispensed.get(item.patient, 0)
                if recorded != 1:
                    verdict.not_flowed += 1
                    examples["valid fill did not flow"].append(f"seq {sent.seq}: {recorded} recorded ({item.shape})")
                continue
            hostile_keys.add(key)
            got = parked.get(key, {})
            missing = [d for d in item.expect if not got.get(d)]
            if missing:
                verdict.not_parked += 1
                examples["not parked"].append(f"{item.subject} seq {sent.seq} ({item.shape}): {', '.join(missing)}")
            for reason in got.values():
                reasons[reason.split(":", 1)[0][:60]] += 1
            continue
        outcome = sent.reply if sent.error is None else sent.error
        replies[f"{item.target.kind}: {outcome}"] += 1
        if outcome == "error":
            verdict.errors += 1
        if outcome not in item.expect:
            verdict.wrong_replies += 1
            examples["wrong reply"].append(
                f"{item.subject} token {item.token} ({item.shape}): expected {'/'.join(item.expect)}, got {outcome}:"
                f" {sent.message[:200]}"
            )
        elif item.target.kind == "request" and outcome != "accepted" and not sent.message:
            verdict.wrong_replies += 1
            examples["refused without a reason"].append(f"{item.subject}: {outcome}")
    verdict.valid_parked = sum(1 for key in parked if key not in hostile_keys)
    verdict.details = {
        "examples": {kind: found[:15] for kind, found in examples.items()},
        "park_reasons": dict(reasons.most_common(40)),
        "replies": dict(replies),
    }
    return verdict
