"""Drug-utilization review engine: pure checks of a medication list against a sourced knowledge base."""

from mtm.review.domain.dur.context import context_from_reconciliation, current_items
from mtm.review.domain.dur.engine import check, priority_from
from mtm.review.domain.dur.knowledge_base import KnowledgeBase, KnowledgeBaseError, KnowledgeTables
from mtm.review.domain.dur.model import CheckedMedication, KidneyFunction, PatientContext

__all__ = [
    "CheckedMedication",
    "KidneyFunction",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "KnowledgeTables",
    "PatientContext",
    "check",
    "context_from_reconciliation",
    "current_items",
    "priority_from",
]
