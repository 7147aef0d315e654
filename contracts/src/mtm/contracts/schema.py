"""Export the JSON Schema of every event and command: `python -m mtm.contracts.schema DIR`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mtm.contracts.commands import (
    AcknowledgeReferral,
    AnswerReferral,
    ClaimReviewTask,
    CommandReply,
    CompleteReviewTask,
    GetActionPlan,
    GetMedicationHistory,
    GetMedicationList,
    GetReferral,
    GetReviewRecord,
    GetReviewTask,
    ListAlertRuleStats,
    ListNotifications,
    ListReferrals,
    ListReviewTasks,
    ListWorklist,
    OverrideAlert,
    ReassignReviewTask,
    RecordActionPlanDelivery,
    RecordRecommendationOutcome,
    ReleaseReviewTask,
)
from mtm.contracts.dead_letter import DeadLetter, DeadLetterRedriven, GetDeadLetter, ListDeadLetters, RedriveDeadLetter
from mtm.contracts.documentation import ActionPlanDocument
from mtm.contracts.events import EVENT_CLASSES
from mtm.contracts.program_commands import DisenrollMember, GetAlertReport, GetCmsReport, GetProgramStatus

COMMAND_CLASSES: tuple[type[BaseModel], ...] = (
    ClaimReviewTask,
    CompleteReviewTask,
    ReleaseReviewTask,
    ReassignReviewTask,
    OverrideAlert,
    RecordRecommendationOutcome,
    RecordActionPlanDelivery,
    AnswerReferral,
    AcknowledgeReferral,
    ListReviewTasks,
    ListWorklist,
    GetReviewTask,
    ListReferrals,
    GetReferral,
    GetMedicationList,
    GetMedicationHistory,
    GetReviewRecord,
    GetActionPlan,
    ActionPlanDocument,
    ListAlertRuleStats,
    ListNotifications,
    DisenrollMember,
    GetProgramStatus,
    GetCmsReport,
    GetAlertReport,
    CommandReply,
    DeadLetter,
    ListDeadLetters,
    GetDeadLetter,
    RedriveDeadLetter,
    DeadLetterRedriven,
)


def schema_name(cls: type[BaseModel]) -> str:
    event_name = getattr(cls, "EVENT_NAME", None)
    return f"{event_name}.v1" if event_name else f"{cls.__name__}.v1"


def schemas() -> dict[str, dict[str, Any]]:
    return {schema_name(cls): cls.model_json_schema(mode="validation") for cls in (*EVENT_CLASSES, *COMMAND_CLASSES)}


def export(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = folder / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in export(Path(sys.argv[1] if len(sys.argv) > 1 else "contracts/schemas")):
        print(path)
