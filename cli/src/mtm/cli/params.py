"""Argument types with clear refusals: patient ids (`p1` or `Patient/p1`), UUIDs named for what they are, dates."""

from __future__ import annotations

import re
import uuid
from datetime import date
from typing import Any

import rich_click as click

from mtm.contracts.admin import SERVICES
from mtm.contracts.limits import FHIR_ID_PATTERN

_FHIR_ID = re.compile(FHIR_ID_PATTERN)


class FhirIdType(click.ParamType):
    """A FHIR id; `Resource/<id>` (what listings print) is taken as `<id>` for the resource named."""

    def __init__(self, what: str, resource: str | None = None) -> None:
        self.name = what
        self.resource = resource

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        if self.resource:
            text = text.removeprefix(f"{self.resource}/")
        if not _FHIR_ID.match(text):
            also = f" ({self.resource}/<id> works too)" if self.resource else ""
            self.fail(
                f"{value!r} is not a {self.name} id: letters, digits, '-' and '.', 1 to 64 characters{also}", param, ctx
            )
        return text


class UuidType(click.ParamType):
    """A UUID, as listings print them; `Resource/<uuid>` is accepted too."""

    def __init__(self, what: str, listed_by: str) -> None:
        self.name = what
        self.listed_by = listed_by

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> uuid.UUID:
        if isinstance(value, uuid.UUID):
            return value
        text = str(value).strip().rsplit("/", 1)[-1]
        try:
            return uuid.UUID(text)
        except ValueError:
            self.fail(f"{value!r} is not a {self.name} id (a UUID, as `{self.listed_by}` prints them)", param, ctx)


class DateType(click.ParamType):
    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD)", param, ctx)


PATIENT = FhirIdType("patient", "Patient")
PRACTITIONER = FhirIdType("practitioner", "Practitioner")
TASK = UuidType("task", "mtm tasks")
REFERRAL = UuidType("referral", "mtm referrals")
RECOMMENDATION = UuidType("recommendation", "mtm record PATIENT")
DATE = DateType()
SERVICE = click.Choice(SERVICES)
