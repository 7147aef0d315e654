"""OpenTelemetry traces: one trace per flow (a discharge and all it causes), across services; off by default.

Off (no `OTEL_*` exporter configured) every helper here returns at its first line and no header is written.

On, a flow's trace id is derived from its correlation id, so every service puts its spans of that discharge in
the same trace even where no message carries the context from one step to the next: a pharmacist's command days
later, notify's delivery worker (it leases notifications from its tables), a timer's escalation. Where a message
does carry it, the W3C `traceparent` header (`tracestate` too) gives the parent span: mtm writes it on every event
it publishes (stored with the event in the outbox, so it survives the relay), on the events commands append, on
physician-inbox messages and webhooks. A context that belongs to another trace (the hospital's on an intake message,
the web app's on a request) is kept as a link, not as the parent, so the flow stays one trace.

Spans carry ids and names of things (consumer, event type, event id, correlation id), never patient data; an
exception is recorded by its type only (its text could hold anything).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mtm.platform.logging import get_logger

log = get_logger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_PROPAGATOR = TraceContextTextMapPropagator()
_provider: Any = None
_tracers: dict[str, Any] = {}
# The trace id the next root span gets (the flow's); read by `FlowIds` while a span starts.
_NEXT_TRACE_ID: ContextVar[int | None] = ContextVar("mtm_next_trace_id", default=None)
_FLOW_PERSON = b"mtm-flow-trace"

CONSUMER = SpanKind.CONSUMER
PRODUCER = SpanKind.PRODUCER
SERVER = SpanKind.SERVER
CLIENT = SpanKind.CLIENT
INTERNAL = SpanKind.INTERNAL


def enabled() -> bool:
    return _provider is not None


def flow_trace_id(correlation_id: uuid.UUID) -> int:
    """The trace id of a flow: a hash of its correlation id (not the id itself: a UUID's fixed version and variant
    bits would skew samplers that decide on the trace id's low bits)."""
    digest = hashlib.blake2b(correlation_id.bytes, digest_size=16, person=_FLOW_PERSON).digest()
    return int.from_bytes(digest, "big") or 1


def _id_generator() -> Any:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class FlowIds(RandomIdGenerator):
        """Random ids, except a flow's root spans, which get the flow's trace id."""

        def generate_trace_id(self) -> int:
            wanted = _NEXT_TRACE_ID.get()
            return wanted if wanted else super().generate_trace_id()

    return FlowIds()


def provider(service: str, exporters: Sequence[Any] = (), *, simple: bool = False) -> Any:
    """A tracer provider with flow trace ids, exporting through `exporters` (batched unless `simple`)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": f"mtm-{service}"}
    made = TracerProvider(resource=Resource.create(attributes), id_generator=_id_generator())
    for exporter in exporters:
        made.add_span_processor(SimpleSpanProcessor(exporter) if simple else BatchSpanProcessor(exporter))
    return made


def install(tracer_provider: Any) -> None:
    """Trace with this provider from now on (None: tracing off)."""
    global _provider
    _provider = tracer_provider
    _tracers.clear()


def shutdown() -> None:
    """Export what is left and stop (a process's end)."""
    found = _provider
    install(None)
    if found is not None:
        with contextlib.suppress(Exception):
            found.shutdown()


def configure_from_environment(service: str, env: Mapping[str, str] | None = None) -> bool:
    """Tracing on when the standard variables ask for an exporter, off otherwise; returns whether it is on.

    `OTEL_TRACES_EXPORTER` (`otlp`, `console`, `none`; default `otlp` when an OTLP endpoint is set, else `none`),
    `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`
    (`http/protobuf`; `grpc` when the gRPC exporter is installed), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
    `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_SDK_DISABLED` are read as the OpenTelemetry SDK defines them.
    """
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    names = env.get("OTEL_TRACES_EXPORTER") or ("otlp" if endpoint else "none")
    exporters = []
    for name in (n.strip().lower() for n in names.split(",")):
        if name == "otlp":
            exporters.append(_otlp_exporter(env))
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name not in ("", "none"):
            log.warning("unknown OTEL_TRACES_EXPORTER; ignored", reason_code=name)
    if not exporters:
        return False
    install(provider(service, exporters))
    return True


def _otlp_exporter(env: Mapping[str, str]) -> Any:
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    if protocol.strip().lower() == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError:
            log.warning("OTLP over gRPC asked for but not installed; exporting over HTTP", reason_code="grpc")
        else:
            return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _tracer() -> Any:
    from mtm.platform.logging import current_service

    service = current_service() or "mtm"
    found = _tracers.get(service)
    if found is None:
        found = _tracers[service] = _provider.get_tracer(f"mtm.{service}")
    return found


def _remote(headers: Mapping[str, str] | None) -> tuple[Any, SpanContext | None]:
    if not headers or TRACEPARENT not in headers:
        return None, None
    ctx = _PROPAGATOR.extract(dict(headers))
    found = otel.get_current_span(ctx).get_span_context()
    return (ctx, found) if found.is_valid else (None, None)


def _placement(
    flow: uuid.UUID | None, headers: Mapping[str, str] | None, parent: SpanContext | None
) -> tuple[Any, list[Link], int | None]:
    """(context to start in, links, trace id for a new root): the flow's trace, whatever the message says."""
    if parent is not None and parent.is_valid:
        ctx, remote = otel.set_span_in_context(NonRecordingSpan(parent)), parent
    else:
        ctx, remote = _remote(headers)
    if flow is None:
        return ctx, [], None  # None: the current context (a caller's span, or a new trace)
    trace_id = flow_trace_id(flow)
    if remote is not None and remote.trace_id == trace_id:
        return ctx, [], None
    current = otel.get_current_span().get_span_context()
    links = [Link(remote)] if remote is not None else []
    if current.is_valid and current.trace_id == trace_id:
        return None, links, None
    return otel_context.Context(), links, trace_id


def start(
    name: str,
    *,
    kind: SpanKind = INTERNAL,
    flow: uuid.UUID | None = None,
    headers: Mapping[str, str] | None = None,
    parent: SpanContext | None = None,
    links: Sequence[SpanContext] = (),
    attributes: Mapping[str, Any] | None = None,
    start_time: int | None = None,
) -> Any:
    """A started span (end it yourself), or None when tracing is off.

    In the flow's trace: a child of `parent` or of the context in `headers` when it is the flow's, else of the
    current span when that is the flow's, else a root of the flow's trace. Without `flow`: a child of `parent`,
    of the headers' context or of the current span, as OpenTelemetry does.
    """
    if _provider is None:
        return None
    ctx, extra, root_trace = _placement(flow, headers, parent)
    all_links = [*extra, *(Link(c) for c in links if c is not None and c.is_valid)]
    token = _NEXT_TRACE_ID.set(root_trace) if root_trace is not None else None
    try:
        return _tracer().start_span(
            name, context=ctx, kind=kind, attributes=attributes, links=all_links, start_time=start_time
        )
    finally:
        if token is not None:
            _NEXT_TRACE_ID.reset(token)


@contextlib.contextmanager
def active(span: Any) -> Iterator[Any]:
    """Make `span` current (children and logs see it) and end it on the way out; an exception marks it failed by
    its type only. Does nothing for None (tracing off)."""
    if span is None:
        yield None
        return
    token = otel_context.attach(otel.set_span_in_context(span))
    try:
        yield span
    except BaseException as exc:
        failed(span, exc)
        raise
    finally:
        otel_context.detach(token)
        span.end()


@contextlib.contextmanager
def span(name: str, **kw: Any) -> Iterator[Any]:
    """`start` and `active` in one: a current span for the block (None when tracing is off)."""
    if _provider is None:
        yield None
        return
    with active(start(name, **kw)) as found:
        yield found


@contextlib.contextmanager
def child(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A span inside the current one only (e.g. a drug check inside a consume): none when nothing is traced."""
    if _provider is None or not otel.get_current_span().get_span_context().is_valid:
        yield None
        return
    with active(_tracer().start_span(name, attributes=attributes)) as found:
        yield found


def failed(span: Any, exc: BaseException) -> None:
    """Mark a span failed with the exception's type; its message is never recorded."""
    if span is not None and span.is_recording():
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(StatusCode.ERROR)


def record(
    name: str,
    parents: Sequence[SpanContext | None],
    start_time: int,
    end_time: int,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """One finished span per parent over the same interval (a batch's transaction, once per message in it)."""
    if _provider is None:
        return
    tracer = _tracer()
    for parent in parents:
        if parent is None:
            continue
        context = otel.set_span_in_context(NonRecordingSpan(parent))
        made = tracer.start_span(name, context=context, attributes=attributes, start_time=start_time)
        made.end(end_time=end_time)


def context_of(span: Any) -> SpanContext | None:
    return span.get_span_context() if span is not None else None


def headers_for(context: SpanContext | None) -> dict[str, str]:
    """W3C trace context headers naming `context` as the parent of what reads them ({} when off or none)."""
    if context is None or not context.is_valid:
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=otel.set_span_in_context(NonRecordingSpan(context)))
    return carrier


def current_headers() -> dict[str, str]:
    """The current span's trace context as headers ({} when off or outside any span)."""
    if _provider is None:
        return {}
    return headers_for(otel.get_current_span().get_span_context())


def context_in(headers: Mapping[str, str] | None) -> SpanContext | None:
    """The span context the headers name, if any (and tracing is on)."""
    if _provider is None:
        return None
    return _remote(headers)[1]


def current_context() -> SpanContext | None:
    """The current span's context (None when off or outside any span)."""
    if _provider is None:
        return None
    found = otel.get_current_span().get_span_context()
    return found if found.is_valid else None


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines; None when off or outside any span."""
    if _provider is None:
        return None
    found = otel.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return otel.format_trace_id(found.trace_id), otel.format_span_id(found.span_id)


def subject_template(subject: str) -> str:
    """A subject without the patient in it: `mtm.patient.{partition}.{patient}.<event>.v1`."""
    parts = subject.split(".")
    if len(parts) >= 6 and parts[0] == "mtm" and parts[1] == "patient":
        return ".".join(("mtm", "patient", "{partition}", "{patient}", *parts[4:]))
    if len(parts) >= 4 and parts[:3] == ["mtm", "inbox", "physician"]:
        return "mtm.inbox.physician.{physician}"
    return subject
