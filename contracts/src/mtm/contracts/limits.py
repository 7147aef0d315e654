"""What mtm accepts: limits stated in the contracts, so that no valid input can outgrow a NATS message.

A discharge at these limits still reconciles, and its review task (both lists, every discrepancy and alert) still
fits in one message of the server's default 1 MiB (`tests/contracts/test_limits.py` builds the largest one).
Anything beyond them is refused with the field and the limit named, never silently cut.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import Field

FHIR_ID_PATTERN: Final = r"^[A-Za-z0-9\-.]{1,64}$"
MAX_MEDICATIONS: Final = 200
"""Per list (home, discharge): several times the most any patient takes."""
MAX_CONDITIONS: Final = 200
MAX_ALLERGIES: Final = 50
MAX_OBSERVATIONS: Final = 200
MAX_RECOMMENDATIONS: Final = 50
MAX_FOLLOW_UPS: Final = 20
MAX_INGREDIENTS: Final = 20
"""Per product: combination products have a handful."""
MAX_REMARK: Final = 500
"""A short free-text field of a review's documentation (a step, directions, a reason)."""
MAX_PROBLEMS: Final = 30
"""Drug therapy problems documented in one review."""
MAX_PLAN_ITEMS: Final = 50
MAX_PLAN_STEPS: Final = 5
MAX_PML: Final = 100
"""Rows of a Personal Medication List."""
MAX_MITIGATIONS: Final = 10
MAX_TEXT: Final = 200
"""A medication, condition, allergy or observation as written."""
MAX_CODE: Final = 64
MAX_NOTE: Final = 10_000
"""A pharmacist's or physician's note."""
MAX_RECOMMENDATION: Final = 2_000
MAX_ALERTS: Final = 300
"""Per review task: beyond it the least severe are left out and one notice says how many."""

NUL_REFUSED: Final = "body: contains NUL (\\u0000 or a zero byte); mtm accepts no NUL in any text"
"""No text mtm accepts may hold NUL: Postgres text cannot store it, so one would stop every table and query that
keeps the text (a medication name in a task's reason made every pharmacist's task list fail). Checked on the raw
body where messages enter mtm (discharges, commands, queries), before anything else reads it."""
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(raw: bytes) -> bool:
    """Whether a JSON body carries NUL: a zero byte, or `\\u0000` that is not an escaped backslash's `u0000`."""
    return b"\x00" in raw or (b"\\u0000" in raw and _ESCAPED_NUL.search(raw) is not None)


FhirId = Annotated[
    str, Field(pattern=FHIR_ID_PATTERN, description="A FHIR id: letters, digits, `-` and `.`, 1 to 64 characters.")
]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Code = Annotated[str, Field(max_length=MAX_CODE)]
Note = Annotated[str, Field(max_length=MAX_NOTE)]
Remark = Annotated[str, Field(min_length=1, max_length=MAX_REMARK)]
Ingredient = Annotated[str, Field(min_length=1, max_length=100)]
