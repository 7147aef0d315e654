"""AsyncAPI 3.0 documents of the services, from their handler tables: `python -m mtm.platform.asyncapi DIR`.

FastStream documents the subscriptions it runs (here the request/reply subjects: commands, queries, admin), but
its generator knows neither mtm's contracts for them (the handlers read raw bytes, to answer a bad body naming
the field) nor the event consumers, which run on mtm's own pull loop. So mtm writes the document from what the
runtime was built from: reactions (durable consumers of the log or of an intake stream), the projection's own
consumer, commands and queries with their contracts, timers, background jobs, the admin subjects, dead letters;
and checks it against FastStream's generator, which must find no subscription the document leaves out.

Every payload is the contract's JSON Schema (pydantic), under `components.schemas`. Patient events are sealed
on the log: the wire form has `datakey` and `data_base64` in place of `data` (see `mtm.platform.crypto`), so an
event's payload is either form; what `data_base64` opens to is the clear form's `data`.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from mtm.contracts import DeadLetter, EventEnvelope
from mtm.contracts.admin import SERVICES, GetPatientKeys, PatientKeys, RebuildProgress
from mtm.contracts.events import PatientErased
from mtm.contracts.identity import ACTOR_TOKEN_HEADER
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, PATIENT_KEYS, PATIENT_KEYS_MADE, dead_letter_subject

if TYPE_CHECKING:
    from mtm.platform.runtime import ServiceRuntime

ASYNCAPI_VERSION = "3.0.0"
REF_TEMPLATE = "#/components/schemas/{model}"
SYSTEM = "mtm"
_ID = re.compile(r"[^A-Za-z0-9_\-]+")

SERVERS = {
    "nats": {
        "host": "nats:4222",
        "protocol": "nats",
        "description": "NATS with JetStream: the address each process reads from MTM_NATS_URL (several seed URLs "
        "for a cluster).",
    }
}
PATIENT_PARAMETERS = {
    "partition": {"description": "CRC-32 (IEEE) of the UTF-8 patient id modulo 16 (mtm.contracts.subjects)."},
    "patient": {"description": "The patient id; `.` is percent-encoded (`a.b` becomes `a%2Eb`)."},
}
SEALED_EVENT = {
    "title": "SealedEvent",
    "description": "A patient event as the log stores it: the CloudEvents envelope in the clear, `data` encrypted "
    "(AES-256-GCM, the event id as associated data) under the patient's key. `data_base64` opens to the `data` of "
    "the event's clear form.",
    "type": "object",
    "required": ["id", "source", "type", "specversion", "time", "subject", "correlation_id", "datakey", "data_base64"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "source": {"type": "string"},
        "type": {"type": "string"},
        "specversion": {"const": "1.0"},
        "time": {"type": "string", "format": "date-time"},
        "subject": {"type": "string", "pattern": "^Patient/[A-Za-z0-9\\-.]{1,64}$"},
        "datacontenttype": {"const": "application/json"},
        "schema_version": {"type": "integer"},
        "correlation_id": {"type": "string", "format": "uuid"},
        "causation_id": {"anyOf": [{"type": "string", "format": "uuid"}, {"type": "null"}]},
        "datakey": {"type": "string", "description": "Id of the patient's key that sealed `data`."},
        "data_base64": {"type": "string", "description": "base64 of the 12-byte nonce and the ciphertext."},
    },
}
TRACE_HEADERS = {
    "traceparent": {"type": "string", "description": "W3C trace context (when tracing is on)."},
    "tracestate": {"type": "string", "description": "W3C trace state (when tracing is on)."},
}
EVENT_HEADERS = {
    "type": "object",
    "properties": {
        "Nats-Msg-Id": {"type": "string", "description": "The event id: JetStream drops a re-send within its window."},
        **TRACE_HEADERS,
    },
}
REQUEST_HEADERS = {
    "type": "object",
    "properties": {
        ACTOR_TOKEN_HEADER: {
            "type": "string",
            "description": "`Bearer <token>`: a short-lived EdDSA JWT naming who acts (mtm.contracts.identity).",
        },
        **TRACE_HEADERS,
    },
}


def _id(text: str) -> str:
    return _ID.sub("_", text).strip("_")


def _doc(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split())


class _Builder:
    """Collects channels, operations, messages and schemas, each once."""

    def __init__(self) -> None:
        self.channels: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.models: dict[str, type[BaseModel]] = {}
        self.schemas: dict[str, Any] = {}

    def model(self, cls: type[BaseModel]) -> dict[str, str]:
        self.models[cls.__name__] = cls
        return {"$ref": REF_TEMPLATE.format(model=cls.__name__)}

    def payload(self, form: Any) -> dict[str, Any]:
        if isinstance(form, Mapping):
            name = str(form["title"])
            self.schemas[name] = dict(form)
            return {"$ref": REF_TEMPLATE.format(model=name)}
        return self.model(form)

    def message(self, name: str, payload: dict[str, Any], *, summary: str, headers: Any = None, **extra: Any) -> str:
        found: dict[str, Any] = {"name": name, "title": name, "contentType": "application/json", "payload": payload}
        if summary:
            found["summary"] = summary
        if headers is not None:
            found["headers"] = headers
        found.update(extra)
        self.messages[name] = found
        return name

    def event_message(self, cls: type[EventEnvelope]) -> str:
        payload = self.model(cls)
        if cls.SEALED:
            self.schemas["SealedEvent"] = SEALED_EVENT
            payload = {"oneOf": [payload, {"$ref": REF_TEMPLATE.format(model="SealedEvent")}]}
        return self.message(
            cls.__name__, payload, summary=_doc(cls), headers=EVENT_HEADERS, **{"x-mtm-sealed": cls.SEALED}
        )

    def model_message(self, cls: type[BaseModel], headers: Any = None) -> str:
        return self.message(cls.__name__, self.model(cls), summary=_doc(cls), headers=headers)

    def channel(
        self, channel_id: str, address: str | None, messages: Iterable[str], *, description: str = "", **extra: Any
    ) -> str:
        found = self.channels.setdefault(channel_id, {"address": address, "messages": {}})
        for name in messages:
            found["messages"][name] = {"$ref": f"#/components/messages/{name}"}
        if description:
            found.setdefault("description", description)
        for key, value in extra.items():
            found.setdefault(key, value)
        return channel_id

    def event_channel(self, cls: type[EventEnvelope]) -> str:
        return self.channel(
            f"patient_{cls.EVENT_NAME}",
            f"mtm.patient.{{partition}}.{{patient}}.{cls.EVENT_NAME}.v{cls.version()}",
            [self.event_message(cls)],
            description=f"`{cls.__name__}` on the patient log (stream {PATIENT_EVENTS_STREAM}); consumers filter on "
            f"`.*` in place of the version, so older versions reach them through the upcasters.",
            parameters=PATIENT_PARAMETERS,
            **{"x-mtm-stream": PATIENT_EVENTS_STREAM},
        )

    def operation(self, operation_id: str, action: str, channel_id: str, **fields: Any) -> None:
        found: dict[str, Any] = {"action": action, "channel": {"$ref": f"#/channels/{channel_id}"}}
        found["messages"] = [
            {"$ref": f"#/channels/{channel_id}/messages/{name}"} for name in self.channels[channel_id]["messages"]
        ]
        found.update({k: v for k, v in fields.items() if v not in (None, "", (), [])})
        self.operations[_id(operation_id)] = found

    def reply(self, cls: type[BaseModel]) -> dict[str, Any]:
        """A reply on the requester's inbox (NATS request/reply: the address is the request's reply subject)."""
        channel_id = self.channel(
            f"reply_{cls.__name__}",
            None,
            [self.model_message(cls)],
            description="The requester's inbox: NATS sends the reply to the request's reply subject.",
        )
        return {"channel": {"$ref": f"#/channels/{channel_id}"}}

    def document(self, title: str, description: str) -> dict[str, Any]:
        _, definitions = models_json_schema(
            [(cls, "validation") for _, cls in sorted(self.models.items())], ref_template=REF_TEMPLATE
        )
        schemas = {**definitions.get("$defs", {}), **self.schemas}
        return {
            "asyncapi": ASYNCAPI_VERSION,
            "info": {"title": title, "version": _version(), "description": description},
            "defaultContentType": "application/json",
            "servers": SERVERS,
            "channels": dict(sorted(self.channels.items())),
            "operations": dict(sorted(self.operations.items())),
            "components": {
                "messages": dict(sorted(self.messages.items())),
                "schemas": dict(sorted(schemas.items())),
            },
        }


def _version() -> str:
    try:
        return version("mtm-platform")
    except PackageNotFoundError:
        return "0"


def _producers(runtime: ServiceRuntime) -> dict[type[EventEnvelope], list[str]]:
    handlers = runtime.definition.handlers
    found: dict[type[EventEnvelope], list[str]] = {}
    for reaction in handlers.reactions:
        for cls in reaction.emits:
            found.setdefault(cls, []).append(f"reaction `{reaction.durable}`")
    for command in handlers.commands:
        for cls in command.emits:
            found.setdefault(cls, []).append(f"command `{command.subject}` (appended with OCC)")
    for timer in handlers.timers:
        for cls in timer.emits:
            found.setdefault(cls, []).append(f"timer `{timer.name}`")
    for cls in runtime.definition.job_emits:
        found.setdefault(cls, []).append("background job")
    if runtime.definition.keeps_keys:
        found.setdefault(PatientErased, []).append(f"command `{runtime.name}` erase (admin)")
    return found


def service_document(runtime: ServiceRuntime) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of one service, as its runtime was built (no connection is made)."""
    builder = _Builder()
    definition = runtime.definition
    handlers = definition.handlers
    name = runtime.name
    for reaction in handlers.reactions:
        if reaction.events:
            for cls in reaction.events:
                channel_id = builder.event_channel(cls)
                builder.operation(
                    f"{reaction.durable}__{cls.EVENT_NAME}",
                    "receive",
                    channel_id,
                    summary=f"durable `{reaction.durable}`",
                    description=_reaction_text(reaction),
                    **_durable_fields(reaction.durable, PATIENT_EVENTS_STREAM, reaction.keeps_input),
                )
        else:
            subject = reaction.filter_subjects[0]
            message = builder.message(
                f"Intake_{_id(subject)}",
                {"oneOf": [builder.payload(form) for form in reaction.accepts]} if reaction.accepts else {},
                summary=f"What `{reaction.durable}` accepts on `{subject}`.",
                headers={"type": "object", "properties": {"Nats-Msg-Id": {"type": "string"}, **TRACE_HEADERS}},
            )
            channel_id = builder.channel(
                _id(subject),
                subject,
                [message],
                description=f"Stream {reaction.stream}.",
                **{"x-mtm-stream": reaction.stream},
            )
            builder.operation(
                reaction.durable,
                "receive",
                channel_id,
                summary=f"durable `{reaction.durable}`",
                description=_reaction_text(reaction),
                **_durable_fields(reaction.durable, reaction.stream, False),
            )
    projection_durable = handlers.projection_durable(name)
    for cls in handlers.appended_directly():
        builder.operation(
            f"{projection_durable}__{cls.EVENT_NAME}",
            "receive",
            builder.event_channel(cls),
            summary=f"durable `{projection_durable}`",
            description="The projection applies events appended straight to the log (its commands' events, "
            "erasures) in log order.",
            **_durable_fields(projection_durable, PATIENT_EVENTS_STREAM, True),
        )
    for cls, producers in sorted(_producers(runtime).items(), key=lambda item: item[0].EVENT_NAME):
        builder.operation(
            f"publish__{cls.EVENT_NAME}",
            "send",
            builder.event_channel(cls),
            summary=f"{name} publishes `{cls.__name__}`",
            description="Recorded by " + ", ".join(producers) + "; published through the outbox with Nats-Msg-Id = "
            "event id, except a command's events, appended with Nats-Expected-Last-Subject-Sequence.",
        )
    answering = {a.subject: a for a in runtime.answering}
    roles = {c.subject: c.roles for c in (*handlers.commands, *handlers.queries)}
    for subject, answer in sorted(answering.items()):
        kind = (
            "command"
            if any(c.subject == subject for c in handlers.commands)
            else "query"
            if any(q.subject == subject for q in handlers.queries)
            else "admin"
        )
        headers = REQUEST_HEADERS if answer.roles else None
        channel_id = builder.channel(_id(subject), subject, [builder.model_message(answer.request, headers)])
        builder.operation(
            f"answer__{subject}",
            "receive",
            channel_id,
            summary=f"{kind}: `{answer.request.__name__}` → `{answer.reply.__name__}`",
            description=_roles_text(roles.get(subject, answer.roles)),
            reply=builder.reply(answer.reply),
            bindings={"nats": {"queue": answer.queue}} if answer.queue else None,
        )
    for consumer in runtime.consumers:
        subject = dead_letter_subject(name, consumer.durable)
        builder.operation(
            f"dead_letter__{consumer.durable}",
            "send",
            builder.channel(
                _id(subject),
                subject,
                [builder.model_message(DeadLetter)],
                description=f"Messages `{consumer.durable}` can never process, with the reason "
                f"(stream DEAD_LETTERS_{name.upper()}).",
            ),
            summary=f"park what `{consumer.durable}` cannot process",
        )
    progress = f"mtm.admin.{name}.rebuild.{{rebuild_id}}.progress"
    builder.operation(
        "rebuild_progress",
        "send",
        builder.channel(
            _id(f"mtm.admin.{name}.rebuild.progress"),
            progress,
            [builder.model_message(RebuildProgress)],
            description="Progress of a rebuild (core NATS, not stored).",
            parameters={"rebuild_id": {"description": "The id of the RebuildProjection request."}},
        ),
        summary="progress of `mtm rebuild`",
    )
    if not definition.keeps_keys:
        builder.operation(
            "ask_patient_keys",
            "send",
            builder.channel(_id(PATIENT_KEYS), PATIENT_KEYS, [builder.model_message(GetPatientKeys)]),
            summary="ask the key keeper for patients' keys (one request per batch)",
            reply=builder.reply(PatientKeys),
        )
    announced = builder.channel(
        _id(PATIENT_KEYS_MADE),
        PATIENT_KEYS_MADE,
        [builder.model_message(PatientKeys)],
        description="Keys the key keeper has just made (core NATS, not stored; the services and the web app only).",
    )
    if definition.keeps_keys:
        builder.operation("announce_patient_keys", "send", announced, summary="announce the keys just made")
    else:
        builder.operation(
            "hear_patient_keys",
            "receive",
            announced,
            summary="keep the keys the keeper announces, so a new patient's first events need no request",
        )
    for publication in definition.sends:
        message = builder.message(
            _message_name(publication.payload),
            builder.payload(publication.payload),
            summary=publication.description,
            headers=EVENT_HEADERS,
        )
        extra = {"x-mtm-stream": publication.stream} if publication.stream else {}
        channel_id = builder.channel(
            _id(publication.address.replace("{", "").replace("}", "")),
            publication.address,
            [message],
            description=publication.description,
            parameters={p: {"description": d} for p, d in publication.parameters},
            **extra,
        )
        builder.operation(f"send__{channel_id}", "send", channel_id, summary=publication.description)
    _check_against_faststream(runtime, builder)
    return builder.document(
        f"mtm {name}",
        f"What the mtm `{name}` service consumes, answers and publishes over NATS (generated from its handler "
        "table by `make docs`; do not edit).",
    )


def _message_name(payload: Any) -> str:
    return str(payload["title"]) if isinstance(payload, Mapping) else payload.__name__


def _durable_fields(durable: str, stream: str, keeps_input: bool) -> dict[str, Any]:
    return {"x-mtm-durable": durable, "x-mtm-stream": stream, "x-mtm-pull": True, "x-mtm-keeps-input": keeps_input}


def _reaction_text(reaction: Any) -> str:
    caused = ", ".join(f"`{cls.__name__}`" for cls in reaction.emits) or "nothing"
    kept = " The projection keeps the input too." if reaction.keeps_input else ""
    retiring = (
        " Retiring: an earlier version's durable, never created; drained if found at start, then deleted."
        if reaction.retiring
        else ""
    )
    return (
        f"Pull consumer `{reaction.durable}` (batches applied in one transaction, acked after commit); "
        f"causes {caused}.{kept}{retiring}"
    )


def _roles_text(roles: Sequence[str]) -> str:
    if not roles:
        return "No actor token needed (NATS permissions decide who may ask)."
    return f"Actor token required (`{ACTOR_TOKEN_HEADER}: Bearer …`); roles: {', '.join(roles)}."


def _check_against_faststream(runtime: ServiceRuntime, builder: _Builder) -> None:
    """FastStream's own generator must find no subscription this document leaves out."""
    from faststream.specification import AsyncAPI

    found = AsyncAPI(runtime.broker, title=runtime.name, version="0").to_specification().to_jsonable()
    documented = {
        builder.channels[op["channel"]["$ref"].rsplit("/", 1)[-1]]["address"]
        for op in builder.operations.values()
        if op["action"] == "receive"
    }
    missing = {channel["address"] for channel in found["channels"].values()} - documented
    if missing:
        raise ValueError(f"{runtime.name} answers subjects its document does not list: {sorted(missing)}")


def system_document(documents: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One document for the whole system: every service's channels and messages, operations by service."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for service, document in sorted(documents.items()):
        for channel_id, channel in document["channels"].items():
            merged = channels.setdefault(channel_id, json.loads(json.dumps(channel)))
            merged["messages"].update(channel["messages"])
        for operation_id, operation in document["operations"].items():
            operations[f"{service}__{operation_id}"] = {**operation, "x-mtm-service": service}
        messages.update(document["components"]["messages"])
        schemas.update(document["components"]["schemas"])
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "mtm",
            "version": _version(),
            "description": "Every subject the mtm services consume, answer and publish over NATS, by service "
            "(operation ids start with the service). Generated by `make docs`; do not edit.",
        },
        "defaultContentType": "application/json",
        "servers": SERVERS,
        "channels": dict(sorted(channels.items())),
        "operations": dict(sorted(operations.items())),
        "components": {"messages": dict(sorted(messages.items())), "schemas": dict(sorted(schemas.items()))},
    }


def service_runtime(service: str) -> ServiceRuntime:
    """A service's runtime as its process would build it (default settings; nothing is connected).

    Found by name, the way `mtm up` starts `python -m mtm.<service>`: the platform depends on no service.
    """
    module = importlib.import_module(f"mtm.{service}.bootstrap")
    return module.create_app().runtime


def documents(services: Sequence[str] = SERVICES) -> dict[str, dict[str, Any]]:
    """`<service>` → its document, and `mtm` → the whole system's."""
    found = {service: service_document(service_runtime(service)) for service in services}
    return {**found, SYSTEM: system_document(found)}


def render(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in documents().items():
        path = folder / f"{name}.asyncapi.json"
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/asyncapi")):
        print(path)
