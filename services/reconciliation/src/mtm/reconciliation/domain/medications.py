"""A medication entry resolved through the drug vocabulary, and how two such entries differ."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, overload

from mtm.contracts.clinical import ListItemFlag, MedicationEntry, MedicationStatus
from mtm.contracts.events import ChangeKind, IngredientDose
from mtm.drugs import (
    Resolution,
    dose_amount_per_administration,
    normalize_route,
    resolve,
    to_canonical_amount,
)

Side = Literal["home", "discharge"]
Amounts = dict[str, tuple[float, str]]

_NOT_TAKING = frozenset(
    {MedicationStatus.STOPPED, MedicationStatus.ON_HOLD, MedicationStatus.CANCELLED, MedicationStatus.COMPLETED}
)
_STOP_FLAGS = frozenset({ListItemFlag.CANCELLED, ListItemFlag.CEASED, ListItemFlag.SUSPENDED})
_CHANGE_FLAGS = frozenset({ListItemFlag.CHANGED, ListItemFlag.PRESCRIBED})
_NAME_NOISE = re.compile(r"[^a-z ]+")
_UNIT_WORDS = frozenset({"mg", "mcg", "g", "ml", "unt", "units", "unit", "actuat", "hr", "day", "mg/ml"})

T = TypeVar("T")


class cached_property(Generic[T]):
    """`functools.cached_property` without its lock: Python 3.11's takes an RLock on every first access (3.12
    dropped it), and a discharge's reconciliation makes about 25 of them. Values are computed on one thread."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> cached_property[T]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...
    def __get__(self, instance: object | None, owner: type | None = None) -> T | cached_property[T]:
        if instance is None:
            return self
        # Stored in the instance's own dict (as functools does, also on a frozen dataclass): the next read finds it
        # there without calling this descriptor.
        value = instance.__dict__[self.name] = self.func(instance)
        return value


@dataclass(frozen=True)
class ResolvedMedication:
    """One entry of the home or discharge list with what the drug vocabulary knows about it."""

    side: Side
    position: int
    entry: MedicationEntry
    resolution: Resolution

    @classmethod
    def of(cls, side: Side, position: int, entry: MedicationEntry) -> ResolvedMedication:
        return cls(side, position, entry, resolve(entry.text, entry.rxnorm_code))

    @property
    def resolved(self) -> bool:
        return bool(self.resolution.ingredients)

    @property
    def ingredients(self) -> tuple[str, ...]:
        return tuple(self.resolution.ingredients)

    @cached_property
    def match_key(self) -> tuple[str, ...]:
        """Ingredient set; unresolved entries fall back to their name without strengths and units."""
        if self.resolved:
            return self.ingredients
        return ("?" + normalized_name(self.entry.text),)

    @property
    def name(self) -> str:
        return " / ".join(self.ingredients) if self.resolved else self.entry.text

    @property
    def is_stop(self) -> bool:
        """The entry says the medication is not (or no longer) taken."""
        entry = self.entry
        return entry.status in _NOT_TAKING or entry.list_flag in _STOP_FLAGS

    @property
    def documents_change(self) -> bool:
        """The discharge system explained this entry: a change/prescribed flag or a documented stop."""
        return self.entry.change_documented or self.entry.list_flag in _CHANGE_FLAGS

    @cached_property
    def route(self) -> str | None:
        """Normalized route as written, else as implied by the dose form (`Oral Tablet`)."""
        written = normalize_route(self.entry.route) if self.entry.route else None
        if written:
            return written
        hint = self.resolution.route_hint
        return normalize_route(hint) if hint else None

    @cached_property
    def formulation(self) -> str | None:
        """Salt and release of the product, e.g. `metoprolol succinate, extended-release`."""
        parts = [f"{c.ingredient} {c.salt}" for c in self.resolution.components if c.salt]
        if self.resolution.release:
            parts.append(self.resolution.release)
        return ", ".join(dict.fromkeys(parts)) or None

    @cached_property
    def salts(self) -> dict[str, str]:
        return {c.ingredient: c.salt for c in self.resolution.components if c.salt}

    @cached_property
    def amount_per_administration(self) -> Amounts:
        """Per-ingredient amount of one administration in canonical units; empty when the dose is not stated."""
        if self.entry.dose_value is None or not self.resolved:
            return {}
        # A dose without a unit counts the product's own dose form: "1" of a tablet is one tablet.
        unit = self.entry.dose_unit or self.resolution.dose_form
        if not unit:
            return {}
        amounts = dose_amount_per_administration(self.resolution, self.entry.dose_value, unit)
        return {ingredient: to_canonical_amount(amount, unit) for ingredient, (amount, unit) in amounts.items()}

    @cached_property
    def comparable_amounts(self) -> Amounts:
        """Amount per administration, or the strength of one unit when the list gives no dose (for matching only)."""
        if self.amount_per_administration:
            return self.amount_per_administration
        if self.entry.dose_value is not None:
            return {}
        strengths: Amounts = {}
        for component in self.resolution.components:
            if component.strength is None or not component.unit:
                continue
            if "/" in component.unit:
                strengths[component.ingredient] = (component.strength, component.unit.lower())
            else:
                strengths[component.ingredient] = to_canonical_amount(component.strength, component.unit)
        return strengths

    def ingredient_doses(self) -> tuple[IngredientDose, ...]:
        per_day = self.entry.frequency_per_day
        doses = []
        for ingredient in self.ingredients:
            amount, unit = self.amount_per_administration.get(ingredient, (None, None))
            daily = amount * per_day if amount is not None and per_day is not None else None
            doses.append(IngredientDose(ingredient=ingredient, amount=amount, unit=unit, daily_amount=daily))
        return tuple(doses)


def normalized_name(text: str) -> str:
    words = [w for w in _NAME_NOISE.sub(" ", text.lower()).split() if w not in _UNIT_WORDS]
    return " ".join(words) or text.lower().strip()


def changes_between(home: ResolvedMedication, discharge: ResolvedMedication) -> tuple[ChangeKind, ...]:
    """What differs between the two sides; a difference is only claimed when both sides state it."""
    changes: list[ChangeKind] = []
    if _dose_differs(home, discharge):
        changes.append("dose")
    if _frequency_differs(home.entry, discharge.entry):
        changes.append("frequency")
    if home.route and discharge.route and home.route != discharge.route:
        changes.append("route")
    if _formulation_differs(home, discharge):
        changes.append("formulation")
    return tuple(changes)


def daily_amounts(medication: ResolvedMedication) -> Amounts:
    """Per-ingredient amount per day; empty unless both the dose and the frequency are stated."""
    per_day = medication.entry.frequency_per_day
    if per_day is None or medication.entry.as_needed:
        return {}
    return {name: (amount * per_day, unit) for name, (amount, unit) in medication.amount_per_administration.items()}


def _dose_differs(home: ResolvedMedication, discharge: ResolvedMedication) -> bool:
    """A different amount per administration that also changes the daily total, when both totals are known.

    25 mg twice daily -> 50 mg once daily is a schedule change (reported as frequency), not a dose change.
    """
    if not _amount_differs(home, discharge):
        return False
    home_daily, discharge_daily = daily_amounts(home), daily_amounts(discharge)
    if home_daily and home_daily.keys() == discharge_daily.keys():
        return any(not same_amount(home_daily[i], discharge_daily[i]) for i in home_daily)
    return True


def _amount_differs(home: ResolvedMedication, discharge: ResolvedMedication) -> bool:
    home_amounts, discharge_amounts = home.comparable_amounts, discharge.comparable_amounts
    common = home_amounts.keys() & discharge_amounts.keys()
    if common:
        return any(not same_amount(home_amounts[i], discharge_amounts[i]) for i in common)
    a, b = home.entry, discharge.entry
    if a.dose_value is None or b.dose_value is None or not a.dose_unit or not b.dose_unit:
        return False
    first = to_canonical_amount(a.dose_value, a.dose_unit)
    second = to_canonical_amount(b.dose_value, b.dose_unit)
    return first[1] == second[1] and not same_amount(first, second)


def same_amount(first: tuple[float, str], second: tuple[float, str]) -> bool:
    return first[1] == second[1] and math.isclose(first[0], second[0], rel_tol=1e-3, abs_tol=1e-9)


def _frequency_differs(home: MedicationEntry, discharge: MedicationEntry) -> bool:
    if home.as_needed != discharge.as_needed and (home.frequency or discharge.frequency):
        return True
    if home.frequency_per_day is None or discharge.frequency_per_day is None:
        return False
    return not math.isclose(home.frequency_per_day, discharge.frequency_per_day, rel_tol=1e-3)


def _formulation_differs(home: ResolvedMedication, discharge: ResolvedMedication) -> bool:
    """Release differs, or both sides name different salts of one ingredient (tartrate vs succinate)."""
    if not (home.resolved and discharge.resolved):
        return False
    if home.resolution.release != discharge.resolution.release:
        return True
    return any(discharge.salts.get(ingredient) not in (None, salt) for ingredient, salt in home.salts.items())
