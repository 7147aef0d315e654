"""Match home and discharge medication lists by ingredient set; classify every item and every discrepancy."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID

from mtm.contracts.clinical import MedicationEntry, MedicationStatus
from mtm.contracts.events import (
    ChangeKind,
    Discrepancy,
    DiscrepancyType,
    ItemStatus,
    ReconciledItem,
    Reconciliation,
    TransitionOfCare,
)
from mtm.reconciliation.domain.medications import (
    ResolvedMedication,
    changes_between,
    daily_amounts,
    same_amount,
)

_STATUS_ORDER: dict[ItemStatus, int] = {"continued": 0, "changed": 1, "new": 2, "stopped": 3}
_DISCREPANCY_ORDER: dict[DiscrepancyType, int] = {
    "commission": 0,
    "omission": 1,
    "duplication": 2,
    "dose": 3,
    "formulation": 4,
    "route": 5,
    "frequency": 6,
}
_STOPPED_AT_HOME = frozenset({MedicationStatus.STOPPED, MedicationStatus.ON_HOLD, MedicationStatus.CANCELLED})
"""A home entry that documents a stop; a completed course is merely over."""
_NOT_TAKEN_AT_HOME = _STOPPED_AT_HOME | {MedicationStatus.COMPLETED}


def reconcile(toc: TransitionOfCare, transition_event_id: UUID) -> Reconciliation:
    """Every medication of both lists as an item, and every undocumented difference as a discrepancy."""
    home = [ResolvedMedication.of("home", i, e) for i, e in enumerate(toc.home_medications)]
    discharge = [ResolvedMedication.of("discharge", i, e) for i, e in enumerate(toc.discharge_medications)]
    groups: dict[tuple[str, ...], _Group] = defaultdict(_Group)
    for medication in home:
        groups[medication.match_key].home.append(medication)
    for medication in discharge:
        groups[medication.match_key].discharge.append(medication)

    items, discrepancies = _combinations(groups)
    for group in groups.values():
        group_items, group_discrepancies = group.reconcile()
        items.extend(group_items)
        discrepancies.extend(group_discrepancies)
    discrepancies.extend(_duplications([m for m in discharge if not m.is_stop], groups))

    items.sort(key=lambda pair: pair[0])
    discrepancies.sort(key=lambda d: (_DISCREPANCY_ORDER[d.type], d.ingredients, d.message))
    return Reconciliation(
        transition_event_id=transition_event_id,
        patient=toc.patient,
        encounter_id=toc.encounter_id,
        discharged_at=toc.discharged_at,
        care_team=toc.care_team,
        items=tuple(item for _, item in items),
        discrepancies=tuple(discrepancies),
        conditions=toc.conditions,
        allergies=toc.allergies,
        observations=toc.observations,
    )


@dataclass
class _Group:
    """Entries of both lists that share one ingredient set (or, unresolved, one name)."""

    home: list[ResolvedMedication] = field(default_factory=list)
    discharge: list[ResolvedMedication] = field(default_factory=list)

    def reconcile(self) -> tuple[list[tuple[tuple, ReconciledItem]], list[Discrepancy]]:
        items: list[tuple[tuple, ReconciledItem]] = []
        discrepancies: list[Discrepancy] = []
        taking = [m for m in self.home if m.entry.status not in _NOT_TAKEN_AT_HOME]
        not_taking = [m for m in self.home if m.entry.status in _NOT_TAKEN_AT_HOME]
        pairs, unpaired_home, unpaired_discharge = _pair(taking, self.discharge)

        for home, discharge, changes in pairs:
            if discharge.is_stop:
                items.append(_item("stopped", home, discharge, documented=discharge.documents_change))
                if not discharge.documents_change:
                    discrepancies.append(_undocumented_stop(home, discharge))
                continue
            documented = discharge.documents_change
            status: ItemStatus = "changed" if changes else "continued"
            explained = documented or (not changes and discharge.entry.list_flag is not None)
            items.append(_item(status, home, discharge, changes=changes, documented=explained))
            if not documented:
                discrepancies.extend(_change_discrepancy(kind, home, discharge) for kind in changes)

        for home in unpaired_home:
            items.append(_item("stopped", home, None, documented=False))
            discrepancies.append(_omission(home))
        for home in not_taking:
            items.append(_item("stopped", home, None, documented=True))
        for discharge in unpaired_discharge:
            if discharge.is_stop:
                items.append(_item("stopped", None, discharge, documented=discharge.documents_change))
            else:
                items.append(_item("new", None, discharge, documented=discharge.documents_change))

        stops = [m for m in self.discharge if m.is_stop] + [m for m in self.home if m.entry.status in _STOPPED_AT_HOME]
        if stops:
            for active in self.discharge:
                if not active.is_stop and not active.documents_change:
                    discrepancies.append(_commission(stops[0], active, self.home))
        return items, discrepancies


Pair = tuple[ResolvedMedication, ResolvedMedication, tuple[ChangeKind, ...]]


def _pair(
    home: list[ResolvedMedication], discharge: list[ResolvedMedication]
) -> tuple[list[Pair], list[ResolvedMedication], list[ResolvedMedication]]:
    """Greedy one-to-one pairing, most alike first; ties keep list order and prefer an active discharge entry.

    Each pair comes with what changes between its two entries, found while weighing how alike they are."""
    candidates = sorted(
        (
            (-_likeness(h, d, changes), h.position, d.position, h, d, changes)
            for h in home
            for d in discharge
            for changes in (changes_between(h, d),)
        ),
        key=lambda c: c[:3],
    )
    pairs: list[Pair] = []
    used_home: set[int] = set()
    used_discharge: set[int] = set()
    for _, home_position, discharge_position, h, d, changes in candidates:
        if home_position in used_home or discharge_position in used_discharge:
            continue
        used_home.add(home_position)
        used_discharge.add(discharge_position)
        pairs.append((h, d, changes))
    pairs.sort(key=lambda p: p[0].position)
    return (
        pairs,
        [h for h in home if h.position not in used_home],
        [d for d in discharge if d.position not in used_discharge],
    )


def _likeness(home: ResolvedMedication, discharge: ResolvedMedication, changes: tuple[ChangeKind, ...]) -> float:
    score = 0.0
    if home.entry.rxnorm_code and home.entry.rxnorm_code == discharge.entry.rxnorm_code:
        score += 4
    if home.entry.text.strip().lower() == discharge.entry.text.strip().lower():
        score += 3
    score += 4 - len(changes)
    if not discharge.is_stop:
        score += 0.5
    return score


def _item(
    status: ItemStatus,
    home: ResolvedMedication | None,
    discharge: ResolvedMedication | None,
    *,
    changes: tuple[ChangeKind, ...] = (),
    documented: bool,
) -> tuple[tuple, ReconciledItem]:
    current = discharge or home
    assert current is not None
    item = ReconciledItem(
        ingredients=current.ingredients,
        status=status,
        changes=changes,
        documented=documented,
        home=home.entry if home else None,
        discharge=discharge.entry if discharge else None,
        resolved=current.resolved,
        formulation=current.formulation,
        route=current.route,
        frequency_per_day=current.entry.frequency_per_day,
        ingredient_doses=current.ingredient_doses(),
    )
    order = (
        current.name.lower(),
        _STATUS_ORDER[status],
        home.position if home else -1,
        discharge.position if discharge else -1,
    )
    return order, item


# --- combinations -------------------------------------------------------------------------------------------


def _combinations(
    groups: dict[tuple[str, ...], _Group],
) -> tuple[list[tuple[tuple, ReconciledItem]], list[Discrepancy]]:
    """A combination product on one list matched against its components on the other (both directions).

    Lisinopril/HCTZ at home that becomes lisinopril + HCTZ at discharge is one medication changing form, not an
    omission and two new drugs. The matched groups leave `groups`; each component becomes an item linked to the
    combination, with its own dose compared by daily total.
    """
    items: list[tuple[tuple, ReconciledItem]] = []
    discrepancies: list[Discrepancy] = []
    for combo_side, parts_side in (("home", "discharge"), ("discharge", "home")):
        for key in sorted(groups, key=lambda k: (-len(k), k)):
            group = groups.get(key)
            if group is None or len(key) < 2 or key[0].startswith("?"):
                continue
            combos, others = getattr(group, combo_side), getattr(group, parts_side)
            if len(combos) != 1 or others or combos[0].is_stop:
                continue
            parts = {
                other_key: getattr(other, parts_side)[0]
                for other_key, other in groups.items()
                if other_key != key
                and set(other_key) < set(key)
                and not getattr(other, combo_side)
                and len(getattr(other, parts_side)) == 1
                and not getattr(other, parts_side)[0].is_stop
            }
            covered = [name for part_key in parts for name in part_key]
            if sorted(covered) != sorted(key):
                continue  # not an exact, non-overlapping split of the combination
            for part_key in (key, *parts):
                groups.pop(part_key)
            combination = combos[0]
            ordered = sorted(parts.values(), key=lambda m: m.position)
            for part in ordered:
                items.append(_component_item(combination, part, combination_at_home=combo_side == "home"))
            discharge_side = [combination] if combo_side == "discharge" else ordered
            if not all(medication.documents_change for medication in discharge_side):
                discrepancies.append(_combination_discrepancy(combination, ordered, combo_side == "home"))
                discrepancies.extend(
                    _component_dose_discrepancy(combination, part, combination_at_home=combo_side == "home")
                    for part in ordered
                    if _component_dose_changed(combination, part)
                )
    return items, discrepancies


def _component_amounts(medication: ResolvedMedication, names: tuple[str, ...]) -> tuple[dict, bool]:
    """Per-day amounts of these ingredients when known (True), else per administration (False)."""
    daily = daily_amounts(medication)
    if daily and all(name in daily for name in names):
        return {name: daily[name] for name in names}, True
    amounts = medication.comparable_amounts
    return {name: amounts[name] for name in names if name in amounts}, False


def _component_dose_changed(combination: ResolvedMedication, part: ResolvedMedication) -> bool:
    combined, combined_daily = _component_amounts(combination, part.ingredients)
    separate, separate_daily = _component_amounts(part, part.ingredients)
    if combined_daily != separate_daily or combined.keys() != separate.keys() or not combined:
        return False
    return any(not same_amount(combined[name], separate[name]) for name in combined)


def _component_item(
    combination: ResolvedMedication, part: ResolvedMedication, *, combination_at_home: bool
) -> tuple[tuple, ReconciledItem]:
    home, discharge = (combination, part) if combination_at_home else (part, combination)
    changes: list[ChangeKind] = ["formulation"]
    if _component_dose_changed(combination, part):
        changes.insert(0, "dose")
    doses = tuple(dose for dose in discharge.ingredient_doses() if dose.ingredient in part.ingredients)
    item = ReconciledItem(
        ingredients=part.ingredients,
        status="changed",
        changes=tuple(changes),
        documented=discharge.documents_change,
        home=home.entry,
        discharge=discharge.entry,
        resolved=True,
        formulation=discharge.formulation,
        route=discharge.route,
        frequency_per_day=discharge.entry.frequency_per_day,
        ingredient_doses=doses,
    )
    return (part.name.lower(), _STATUS_ORDER["changed"], home.position, discharge.position), item


def _combination_discrepancy(
    combination: ResolvedMedication, parts: list[ResolvedMedication], combination_at_home: bool
) -> Discrepancy:
    separate = "; ".join(describe(part.entry) for part in parts)
    if combination_at_home:
        what = (
            f"one combination product at home ({describe(combination.entry)}), separate products at discharge "
            f"({separate}); make sure the combination product is stopped at home (double dosing)"
        )
    else:
        what = (
            f"separate products at home ({separate}), one combination product at discharge "
            f"({describe(combination.entry)}); make sure the separate products are stopped at home (double dosing)"
        )
    return Discrepancy(
        type="formulation",
        ingredients=combination.ingredients,
        home=combination.entry if combination_at_home else parts[0].entry,
        discharge=parts[0].entry if combination_at_home else combination.entry,
        message=f"{_title(combination)}: {what}; no change is documented.",
    )


def _component_dose_discrepancy(
    combination: ResolvedMedication, part: ResolvedMedication, *, combination_at_home: bool
) -> Discrepancy:
    combined, per_day = _component_amounts(combination, part.ingredients)
    separate, _ = _component_amounts(part, part.ingredients)
    at_home, at_discharge = (combined, separate) if combination_at_home else (separate, combined)
    home, discharge = (combination, part) if combination_at_home else (part, combination)

    def written(amounts: dict) -> str:
        return " + ".join(f"{amount:g} {unit} {name}" for name, (amount, unit) in sorted(amounts.items()))

    measure = "per day" if per_day else "per administration"
    return Discrepancy(
        type="dose",
        ingredients=part.ingredients,
        home=home.entry,
        discharge=discharge.entry,
        message=(
            f"{_title(part)}: dose {measure} {written(at_home)} at home ({home.entry.text}), "
            f"{written(at_discharge)} at discharge ({discharge.entry.text}); no change is documented."
        ),
    )


# --- discrepancies --------------------------------------------------------------------------------------------


def _omission(home: ResolvedMedication) -> Discrepancy:
    return Discrepancy(
        type="omission",
        ingredients=home.ingredients,
        home=home.entry,
        message=(
            f"{_title(home)}: on the home list ({describe(home.entry)}) but not on the discharge list, "
            "and no stop is documented."
        ),
    )


def _undocumented_stop(home: ResolvedMedication, discharge: ResolvedMedication) -> Discrepancy:
    return Discrepancy(
        type="omission",
        ingredients=home.ingredients,
        home=home.entry,
        discharge=discharge.entry,
        message=(
            f"{_title(home)}: taken at home ({describe(home.entry)}) and marked {discharge.entry.status.value} "
            "on the discharge list without a documented reason."
        ),
    )


def _change_discrepancy(kind: ChangeKind, home: ResolvedMedication, discharge: ResolvedMedication) -> Discrepancy:
    return Discrepancy(
        type=kind,
        ingredients=discharge.ingredients or home.ingredients,
        home=home.entry,
        discharge=discharge.entry,
        message=f"{_title(discharge)}: {_CHANGE_WORDING[kind](home, discharge)}; no change is documented.",
    )


def _commission(stop: ResolvedMedication, active: ResolvedMedication, home: list[ResolvedMedication]) -> Discrepancy:
    where = "on the home list" if stop.side == "home" else "on the discharge list"
    how = _stop_wording(stop.entry)
    return Discrepancy(
        type="commission",
        ingredients=active.ingredients,
        home=home[0].entry if home else None,
        discharge=active.entry,
        message=(
            f"{_title(active)}: documented as {how} {where} ({stop.entry.text}) but also active on the "
            f"discharge list ({describe(active.entry)})."
        ),
    )


def _duplications(
    active_discharge: list[ResolvedMedication], groups: dict[tuple[str, ...], _Group]
) -> Iterable[Discrepancy]:
    """The same ingredient in more than one active discharge entry (combination products included)."""
    holders: dict[str, list[ResolvedMedication]] = defaultdict(list)
    for medication in active_discharge:
        for ingredient in medication.match_key:
            holders[ingredient].append(medication)
    shared: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for ingredient, medications in holders.items():
        if len(medications) > 1:
            shared[tuple(m.position for m in medications)].append(ingredient)
    for positions, ingredients in shared.items():
        duplicates = [m for m in active_discharge if m.position in positions]
        resolved = [i for i in ingredients if not i.startswith("?")]
        home_entries = groups[duplicates[0].match_key].home
        listed = "; ".join(describe(m.entry) for m in duplicates)
        name = " / ".join(sorted(resolved)) or duplicates[0].entry.text
        yield Discrepancy(
            type="duplication",
            ingredients=tuple(sorted(resolved)),
            home=home_entries[0].entry if home_entries else None,
            discharge=duplicates[-1].entry,
            message=(f"{name[:1].upper() + name[1:]}: on the discharge list {len(duplicates)} times ({listed})."),
        )


def describe(entry: MedicationEntry) -> str:
    """The entry as a clinician reads it: `Metoprolol tartrate 25 MG Oral Tablet, 1 tablet, BID, oral`."""
    parts = [entry.text]
    if entry.dose_value is not None:
        parts.append(f"{entry.dose_value:g} {entry.dose_unit or ''}".strip())
    if entry.frequency:
        parts.append(entry.frequency + (" as needed" if entry.as_needed else ""))
    elif entry.as_needed:
        parts.append("as needed")
    if entry.route:
        parts.append(entry.route)
    return ", ".join(parts)


def _title(medication: ResolvedMedication) -> str:
    return medication.name[:1].upper() + medication.name[1:]


def _stop_wording(entry: MedicationEntry) -> str:
    if entry.list_flag is not None and entry.list_flag.value in ("03", "05", "06"):
        how = {"03": "cancelled", "05": "ceased", "06": "suspended"}[entry.list_flag.value]
    else:
        how = entry.status.value
    return f"{how} ({entry.status_reason})" if entry.status_reason else how


def _amounts(medication: ResolvedMedication) -> str:
    amounts = medication.comparable_amounts
    if amounts:
        return " + ".join(f"{amount:g} {unit} {ingredient}" for ingredient, (amount, unit) in sorted(amounts.items()))
    entry = medication.entry
    if entry.dose_value is not None:
        return f"{entry.dose_value:g} {entry.dose_unit or ''}".strip()
    return entry.text


def _frequency(entry: MedicationEntry) -> str:
    written = entry.frequency or "no frequency"
    if entry.frequency_per_day is not None:
        written += f" ({entry.frequency_per_day:g}/day)"
    return written + (" as needed" if entry.as_needed else "")


def _daily(medication: ResolvedMedication) -> str:
    totals = daily_amounts(medication)
    return " + ".join(f"{amount:g} {unit} {name}" for name, (amount, unit) in sorted(totals.items()))


def _dose_wording(home: ResolvedMedication, discharge: ResolvedMedication) -> str:
    wording = f"dose per administration {_amounts(home)} at home, {_amounts(discharge)} at discharge"
    if (
        daily_amounts(home)
        and daily_amounts(discharge)
        and home.entry.frequency_per_day != discharge.entry.frequency_per_day
    ):
        wording += f" (per day {_daily(home)} at home, {_daily(discharge)} at discharge)"
    return wording


_CHANGE_WORDING = {
    "dose": _dose_wording,
    "frequency": lambda h, d: f"frequency {_frequency(h.entry)} at home, {_frequency(d.entry)} at discharge",
    "route": lambda h, d: f"route {h.route} at home, {d.route} at discharge",
    "formulation": lambda h, d: (
        f"formulation {h.formulation or 'immediate-release'} at home ({h.entry.text}), "
        f"{d.formulation or 'immediate-release'} at discharge ({d.entry.text})"
    ),
}
