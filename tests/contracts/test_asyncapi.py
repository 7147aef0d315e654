"""AsyncAPI: the committed documents are what `make docs` writes, valid AsyncAPI 3.0, and say what flows where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mtm.contracts.admin import SERVICES
from mtm.contracts.events import EVENT_CLASSES
from mtm.platform.asyncapi import SYSTEM, documents, render

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "docs" / "asyncapi"
ASYNCAPI_SCHEMA = Path(__file__).resolve().parent / "data" / "asyncapi-3.0.0.schema.json"


@pytest.fixture(scope="module")
def generated() -> dict[str, dict[str, Any]]:
    return documents()


def test_committed_documents_are_up_to_date(generated) -> None:
    """Regenerate with `make docs` after changing a handler table or a contract."""
    assert sorted(p.name for p in FOLDER.glob("*.asyncapi.json")) == sorted(f"{n}.asyncapi.json" for n in generated)
    for name, document in generated.items():
        committed = (FOLDER / f"{name}.asyncapi.json").read_text(encoding="utf-8")
        assert committed == render(document), f"docs/asyncapi/{name}.asyncapi.json is stale: run `make docs`"


def test_documents_are_valid_asyncapi_3(generated) -> None:
    validator = jsonschema.Draft7Validator(json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8")))
    for name, document in generated.items():
        errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)]
        assert not errors, (name, errors[:5])


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_every_reference_resolves(generated) -> None:
    for name, document in generated.items():
        for ref in _refs(document):
            try:
                _resolve(document, ref)
            except (KeyError, TypeError):
                pytest.fail(f"{name}: {ref} points nowhere")


def test_every_golden_sample_matches_its_message_payload(generated) -> None:
    """The payload an integrator reads in the document accepts the event as mtm writes it."""
    document = generated[SYSTEM]
    messages = document["components"]["messages"]
    for cls in EVENT_CLASSES:
        sample = json.loads((ROOT / "contracts" / "samples" / f"{cls.EVENT_NAME}.v1.json").read_text())
        payload = messages[cls.__name__]["payload"]
        schema = {**payload, "components": document["components"]}
        jsonschema.Draft202012Validator(schema).validate(sample)
        assert messages[cls.__name__]["x-mtm-sealed"] is cls.SEALED


def _addresses(document: dict[str, Any], action: str) -> set[str]:
    return {
        document["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]["address"]
        for op in document["operations"].values()
        if op["action"] == action
    }


def test_every_event_a_service_consumes_is_published_by_some_service(generated) -> None:
    """What a reaction reads is declared as sent by its producer's table (an undeclared `emits` shows here)."""
    received = set().union(*(_addresses(generated[s], "receive") for s in SERVICES))
    sent = set().union(*(_addresses(generated[s], "send") for s in SERVICES))
    patient_events = {a for a in received if a.startswith("mtm.patient.")}
    assert patient_events <= sent, sorted(patient_events - sent)


def test_each_service_document_lists_its_commands_queries_and_consumers(generated) -> None:
    review = generated["review"]
    receives = _addresses(review, "receive")
    assert {"mtm.cmd.review.claim.v1", "mtm.query.review.worklist.v1", "mtm.admin.review.status.v1"} <= receives
    assert "mtm.patient.{partition}.{patient}.medications_reconciled.v1" in receives
    assert "mtm.patient.{partition}.{patient}.review_task_created.v1" in _addresses(review, "send")
    claim = review["operations"]["answer__mtm_cmd_review_claim_v1"]
    assert claim["reply"]["channel"] == {"$ref": "#/channels/reply_CommandReply"}
    assert claim["bindings"] == {"nats": {"queue": "review"}}
    notify = generated["notify"]
    assert "mtm.inbox.physician.{physician}" in _addresses(notify, "send")
    assert "mtm.patient.{partition}.{patient}.notification_delivered.v1" in _addresses(notify, "send")
    intake = generated["reconciliation"]["components"]["messages"]["Intake_mtm_intake_discharge_v1"]
    assert {ref["$ref"].rsplit("/", 1)[-1] for ref in intake["payload"]["oneOf"]} == {
        "TransitionOfCareRecorded",
        "FhirR4Bundle",
    }
