"""The completion form read into the review contracts: recommendations, CMR/TMR documentation, follow-ups."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from typing import Any, get_args

from pydantic import ValidationError
from starlette.datastructures import FormData

from mtm.contracts import FollowUpRequest, Recommendation
from mtm.contracts.documentation import (
    ActionPlanItem,
    DeliveryMethod,
    DrugTherapyProblem,
    DtpCategory,
    MitigationCode,
    PersonalMedication,
    ProviderType,
    ReviewDocumentation,
    ReviewRecipient,
    Severity,
)
from mtm.contracts.events import ActionPlanDeliveryMethod, RecommendationAction, TaskPriority
from mtm.contracts.limits import MAX_PLAN_STEPS, MAX_PML

ACTIONS: tuple[str, ...] = get_args(RecommendationAction)
PRIORITIES: tuple[str, ...] = get_args(TaskPriority)
DELIVERY_METHODS: tuple[str, ...] = get_args(DeliveryMethod)
PLAN_DELIVERY_METHODS: tuple[str, ...] = get_args(ActionPlanDeliveryMethod)
RECIPIENTS: tuple[str, ...] = get_args(ReviewRecipient)
PROVIDER_TYPES: tuple[str, ...] = get_args(ProviderType)
CATEGORIES: tuple[str, ...] = get_args(DtpCategory)
SEVERITIES: tuple[str, ...] = get_args(Severity)
# ActDetectedIssueManagementCode in the pharmacist's words (the codes the contract lists).
MITIGATIONS: dict[str, str] = dict(
    zip(
        get_args(MitigationCode),
        (
            "therapy appropriate",
            "assessed patient",
            "patient explanation",
            "consulted other source",
            "consulted prescriber",
            "prescriber declined change",
            "interacting therapy no longer active/planned",
            "other action taken",
            "instituted ongoing monitoring program",
            "provided patient education",
            "added concurrent therapy",
            "temporarily suspended concurrent therapy",
            "stopped concurrent therapy",
            "supply appropriate",
            "replacement",
            "vacation supply",
            "weekend supply",
            "leave of absence",
            "consulted supplier",
        ),
        strict=True,
    )
)
# Rows the form offers (a review with more writes them with `mtm review complete`).
RECOMMENDATION_ROWS = 3
PROBLEM_ROWS = 3
PLAN_ROWS = 3
EXTRA_PML_ROWS = 2
FOLLOW_UP_ROWS = 2
MAX_ROWS = 20
# A follow-up is asked for by day; it falls due at noon UTC, the same calendar day across the Americas and Europe.
FOLLOW_UP_HOUR = time(12, 0, tzinfo=UTC)


class FormError(ValueError):
    """The form cannot become a command; the message (one line) says which field and why."""


def one_line(exc: ValidationError) -> str:
    """A contract's refusal as one line: the first field at fault and why (`documentation.problems.0.detail: …`)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def _text(form: FormData, name: str) -> str:
    return " ".join(str(form.get(name) or "").split())


def _words(form: FormData, name: str) -> tuple[str, ...]:
    """A comma-separated field as lowercase words (ingredients)."""
    return tuple(part.strip().lower() for part in str(form.get(name) or "").split(",") if part.strip())


def _lines(form: FormData, name: str) -> tuple[str, ...]:
    return tuple(" ".join(line.split()) for line in str(form.get(name) or "").splitlines() if line.strip())


def _choice(form: FormData, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = str(form.get(name) or "")
    return value if value in allowed else default


def _date(form: FormData, name: str, what: str) -> date | None:
    value = str(form.get(name) or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise FormError(f"{what}: {value!r} is not a date (YYYY-MM-DD)") from None


def _row(form: FormData, name: str) -> int | None:
    """A row reference (`rec-2-problem` = `1` means the second problem row), or None."""
    value = str(form.get(name) or "").strip()
    return int(value) if value.isdigit() else None


def recommendations_of(form: FormData, problem_ids: dict[int, uuid.UUID]) -> dict[int, Recommendation]:
    """The filled-in recommendation rows by row number (`rec-<n>-text`, `-action`, `-ingredients`, `-priority`,
    `-refer`, `-problem`: the problem row it addresses)."""
    found = {}
    for n in range(MAX_ROWS):
        text = str(form.get(f"rec-{n}-text") or "").strip()
        if not text:
            continue
        problem = _row(form, f"rec-{n}-problem")
        found[n] = Recommendation(
            recommendation_id=uuid.uuid4(),
            text=text,
            action=_choice(form, f"rec-{n}-action", ACTIONS, "other"),  # type: ignore[arg-type]
            ingredients=_words(form, f"rec-{n}-ingredients"),
            needs_prescriber=form.get(f"rec-{n}-refer") == "on",
            priority=_choice(form, f"rec-{n}-priority", PRIORITIES, "routine"),  # type: ignore[arg-type]
            problem_id=problem_ids.get(problem) if problem is not None else None,
        )
    return found


def _origin(form: FormData, name: str) -> dict[str, int]:
    """`alert-3` / `discrepancy-0`: what in the task raised the problem."""
    kind, _, number = str(form.get(name) or "").partition("-")
    if kind in ("alert", "discrepancy") and number.isdigit():
        return {kind: int(number)}
    return {}


def problems_of(form: FormData) -> dict[int, DrugTherapyProblem]:
    """The filled-in problem rows by row number (`prob-<k>-detail`, `-category`, `-severity`, `-ingredients`,
    `-origin`, `-mitigation`, `-mitigation-note`)."""
    found = {}
    for k in range(MAX_ROWS):
        detail = str(form.get(f"prob-{k}-detail") or "").strip()
        if not detail:
            continue
        code = str(form.get(f"prob-{k}-mitigation") or "")
        note = _text(form, f"prob-{k}-mitigation-note") or None
        mitigations = ({"action": code, "note": note},) if code in MITIGATIONS else ()
        found[k] = DrugTherapyProblem.model_validate(
            {
                "problem_id": uuid.uuid4(),
                "category": _choice(form, f"prob-{k}-category", CATEGORIES, "adherence"),
                "severity": _choice(form, f"prob-{k}-severity", SEVERITIES, "moderate"),
                "detail": detail,
                "ingredients": _words(form, f"prob-{k}-ingredients"),
                "mitigations": mitigations,
                **_origin(form, f"prob-{k}-origin"),
            }
        )
    return found


def action_plan_of(form: FormData, recommendation_ids: dict[int, uuid.UUID]) -> tuple[ActionPlanItem, ...]:
    """The Medication Action Plan rows (`plan-<k>-topic`, `-steps` one per line, `-rec`: the recommendation row)."""
    found = []
    for k in range(MAX_ROWS):
        topic = _text(form, f"plan-{k}-topic")
        if not topic:
            continue
        steps = _lines(form, f"plan-{k}-steps")
        if not steps:
            raise FormError(f"action plan {topic!r}: write at least one step under “What I need to do”")
        if len(steps) > MAX_PLAN_STEPS:
            raise FormError(f"action plan {topic!r}: at most {MAX_PLAN_STEPS} steps")
        rec = _row(form, f"plan-{k}-rec")
        found.append(
            ActionPlanItem(
                topic=topic,
                steps=steps,
                recommendation_id=recommendation_ids.get(rec) if rec is not None else None,
            )
        )
    return tuple(found)


def medications_of(form: FormData) -> tuple[PersonalMedication, ...]:
    """The Personal Medication List rows (`pml-<k>-name`, `-how`, `-why`, `-prescriber`, `-started`, `-stopped`,
    `-why-stopped`, `-ingredients`, `-rxnorm`)."""
    found = []
    for k in range(MAX_PML):
        name = _text(form, f"pml-{k}-name")
        if not name:
            continue
        how = _text(form, f"pml-{k}-how")
        if not how:
            raise FormError(f"medication list {name!r}: say how the member uses it")
        found.append(
            PersonalMedication(
                name=name,
                ingredients=_words(form, f"pml-{k}-ingredients"),
                rxnorm_code=_text(form, f"pml-{k}-rxnorm") or None,
                how_i_use_it=how,
                why_i_use_it=_text(form, f"pml-{k}-why") or None,
                prescriber=_text(form, f"pml-{k}-prescriber") or None,
                started=_date(form, f"pml-{k}-started", f"medication list {name!r} started"),
                stopped=_date(form, f"pml-{k}-stopped", f"medication list {name!r} stopped"),
                why_stopped=_text(form, f"pml-{k}-why-stopped") or None,
            )
        )
    return tuple(found)


def follow_ups_of(form: FormData) -> tuple[FollowUpRequest, ...]:
    """Follow-ups asked for (`fu-<k>-due` a day, `-reason`): each a targeted review when it comes due."""
    found = []
    for k in range(MAX_ROWS):
        reason = _text(form, f"fu-{k}-reason")
        due = _date(form, f"fu-{k}-due", f"follow-up {k + 1} date")
        if not reason and due is None:
            continue
        if not reason or due is None:
            raise FormError(f"follow-up {k + 1}: give both the date and the reason")
        found.append(FollowUpRequest(due=datetime.combine(due, FOLLOW_UP_HOUR), reason=reason))
    return tuple(found)


def completion_of(form: FormData, *, documented: bool) -> dict[str, Any]:
    """The parts of CompleteReviewTask the form holds (`documented`: the review is recorded as a CMR/TMR, with
    its CMS data elements, problems, action plan and medication list).

    Raises FormError (or pydantic's ValidationError) saying what cannot be read."""
    problems = problems_of(form) if documented else {}
    recommendations = recommendations_of(form, {k: p.problem_id for k, p in problems.items()})
    documentation = None
    if documented:
        performed_on = _date(form, "doc-performed-on", "date of the review")
        if performed_on is None:
            raise FormError("date of the review: required for a documented review")
        documentation = ReviewDocumentation(
            performed_on=performed_on,
            delivery_method=_choice(form, "doc-delivery-method", DELIVERY_METHODS, "face-to-face"),  # type: ignore[arg-type]
            recipient=_choice(form, "doc-recipient", RECIPIENTS, "beneficiary"),  # type: ignore[arg-type]
            provider_type=_choice(form, "doc-provider-type", PROVIDER_TYPES, "local-pharmacist"),  # type: ignore[arg-type]
            problems=tuple(problems.values()),
            action_plan=action_plan_of(form, {n: r.recommendation_id for n, r in recommendations.items()}),
            medications=medications_of(form),
            allergies=tuple(
                part.strip() for line in _lines(form, "doc-allergies") for part in line.split(";") if part.strip()
            ),
        )
    return {
        "note": str(form.get("note") or "").strip() or None,
        "recommendations": tuple(recommendations.values()),
        "documentation": documentation,
        "follow_ups": follow_ups_of(form),
    }


def directions(entry: dict[str, Any]) -> str:
    """How a listed medication is taken, as a starting line for the member's list (the pharmacist rewrites it)."""
    parts = []
    if entry.get("dose_value") is not None:
        parts.append(f"{entry['dose_value']:g} {entry.get('dose_unit') or ''}".strip())
    for key in ("route", "frequency"):
        if entry.get(key):
            parts.append(str(entry[key]))
    if entry.get("as_needed"):
        parts.append("when needed")
    # What review writes when it makes the list from the chart and the entry states nothing to go by.
    return " ".join(parts) or "as directed"


def medication_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Personal Medication List rows the form starts from: what the member takes now (not what was stopped)."""
    rows = []
    for item in items:
        entry = item.get("discharge") if item.get("status") != "stopped" else None
        if entry:
            rows.append(
                {
                    "name": entry.get("text") or "",
                    "ingredients": ", ".join(item.get("ingredients") or ()),
                    "rxnorm": entry.get("rxnorm_code") or "",
                    "how": directions(entry),
                }
            )
    return rows[: MAX_PML - EXTRA_PML_ROWS]
