"""Composition of one service process from its handler table: pool, streams, consumers, commands, outbox, admin."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from faststream import AckPolicy, FastStream
from faststream.nats import NatsBroker, NatsMessage
from nats import errors as nats_errors
from nats.js import JetStreamContext
from nats.js import errors as js_errors
from pydantic import BaseModel, ValidationError

from mtm.contracts import EVENTS, CommandReply, EventEnvelope, EventRegistry, UnknownEvent
from mtm.contracts.admin import (
    ErasePatient,
    GetPatientKeys,
    GetServiceStatus,
    PatientKeys,
    RebuildProgress,
    RebuildProjection,
    ServiceStatus,
    rebuild_progress_subject,
    rebuild_subject,
    status_subject,
)
from mtm.contracts.events import Erasure, PatientErased
from mtm.contracts.identity import ACTOR_TOKEN_HEADER, Actor, Role
from mtm.contracts.limits import NUL_REFUSED, has_nul
from mtm.contracts.subjects import (
    ERASE_PATIENT,
    PATIENT_EVENTS_STREAM,
    PATIENT_KEYS,
    event_name_of_subject,
    subject_token,
)
from mtm.platform import tracing
from mtm.platform.access import ACCESS, group_durable_name, rebuild_reader_name
from mtm.platform.bodies import EventBodies
from mtm.platform.consumer import BatchConsumer, BatchProcessor, describe_invalid, order_key
from mtm.platform.crypto import KeyRing, PatientKey, Sealer
from mtm.platform.db import apply_migrations, create_pool
from mtm.platform.faults import TaskHealth, backoff, supervise, until_set
from mtm.platform.identity import Forbidden, TokenVerifier, Unauthorized, require_role
from mtm.platform.keys import KeyStore, announce_keys, hear_keys, key_reply, nats_key_source
from mtm.platform.leases import GroupKey, GroupLeases
from mtm.platform.log import ConcurrencyConflict, PatientLog, TooLargeForTheLog
from mtm.platform.logging import configure_logging, get_logger, own_process, service_scope
from mtm.platform.metrics import metrics_scope
from mtm.platform.observe import ServiceTelemetry
from mtm.platform.outbox import OutboxRelay
from mtm.platform.projection import (
    LIVE_SCHEMA,
    SEARCH_PATH,
    UnitOfWork,
    is_applied,
    platform_projection_migrations,
)
from mtm.platform.reading import EventReader
from mtm.platform.rebuild import RebuildBusy, Rebuilder, RebuildResult
from mtm.platform.service import (
    Command,
    Database,
    Publication,
    Query,
    ServiceHandlers,
    projection_consumer,
    reaction_consumer,
)
from mtm.platform.settings import ServiceSettings
from mtm.platform.status import Readiness, answer_status, lease_readiness
from mtm.platform.streams import (
    DurableSpec,
    StreamSpec,
    dead_letter_stream,
    declare_dead_letter_bodies,
    declare_stream,
    ensure_durable,
    wait_for_stream,
)
from mtm.platform.timers import run_timer

log = get_logger(__name__)

# A job runs until the service stops: it must end once `runtime.stopping` is set, cancelled or not.
BackgroundJob = Callable[["ServiceRuntime"], Awaitable[None]]
# A command whose appends keep conflicting with other writers of the same patient gives up after this many tries.
OCC_ATTEMPTS = 8
# Erasing a patient twice records one event: its id is derived from the patient.
ERASURE_NAMESPACE = uuid.UUID("5b7f1c9e-2d4a-4c83-9a61-0f3e8b2d7a44")
# Poll interval while a command waits for its events to show in the projection (read-your-writes).
APPLIED_POLL_S = 0.005
# The patient's events this service recorded but the relay has not yet put on the log (the 4th subject token).
PATIENT_IN_OUTBOX = "SELECT EXISTS (SELECT 1 FROM outbox WHERE split_part(subject, '.', 4) = $1)"
POOL_CLOSE_S = 10.0


@dataclass(frozen=True)
class ServiceDefinition:
    """A service as the runtime needs it: its name, its handler table, the streams it owns and reads."""

    name: str
    handlers: ServiceHandlers
    migrations: Traversable | None = None
    """Numbered SQL for the service's own bookkeeping in `public` (not the projection), if it has any."""
    owned_streams: tuple[StreamSpec, ...] = ()
    consumed_streams: tuple[str, ...] = ()
    background_jobs: Sequence[BackgroundJob] = ()
    registry: EventRegistry = EVENTS
    database: Database | None = None
    """Bound to the pool at start, for ports the handler table's use cases read through."""
    keeps_keys: bool = False
    """This service keeps the patients' event keys (and answers erasure); the others ask it for keys."""
    job_emits: tuple[type[EventEnvelope], ...] = ()
    """Events its background jobs record (notify's delivery worker), for its AsyncAPI document."""
    sends: tuple[Publication, ...] = ()
    """Messages it publishes outside the patient log, for its AsyncAPI document."""

    @property
    def projection_scopes(self) -> list[tuple[str, Traversable]]:
        return [("platform", platform_projection_migrations()), (self.name, self.handlers.projection.migrations)]

    def consumers(self, reader: EventReader) -> list[BatchConsumer[Any]]:
        """Every durable consumer of the service: one per reaction, and the projection's own (commands' events,
        erasures)."""
        projection = self.handlers.projection
        found: list[BatchConsumer[Any]] = [reaction_consumer(r, projection, reader) for r in self.handlers.reactions]
        durable = self.handlers.projection_durable(self.name)
        found.append(projection_consumer(durable, self.handlers.appended_directly(), projection, reader))
        return found


@dataclass(frozen=True)
class Answering:
    """A request/reply subject the service answers (for its AsyncAPI document)."""

    subject: str
    request: type[BaseModel]
    roles: tuple[Role, ...]
    queue: str | None
    reply: type[BaseModel] = CommandReply


@dataclass
class ServiceRuntime:
    """What a running service holds; filled in when it starts, never at import."""

    definition: ServiceDefinition
    settings: ServiceSettings
    broker: NatsBroker
    consumers: list[BatchConsumer[Any]]
    pool: asyncpg.Pool | None = None
    js: JetStreamContext | None = None
    relay: OutboxRelay | None = None
    patient_log: PatientLog | None = None
    leases: GroupLeases | None = None
    processors: dict[str, BatchProcessor[Any]] = field(default_factory=dict)
    pull_loops: dict[GroupKey, tuple[asyncio.Task[None], asyncio.Event]] = field(default_factory=dict)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    rebuild: asyncio.Task[RebuildResult] | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    serving: bool = False
    verifier: TokenVerifier = field(default_factory=lambda: TokenVerifier(()))
    task_health: list[TaskHealth] = field(default_factory=list)
    reader: EventReader | None = None
    key_store: KeyStore | None = None
    answering: list[Answering] = field(default_factory=list)
    draining: set[str] = field(default_factory=set)
    """Durables of retiring consumers found at start and not deleted yet: what an earlier version left to drain."""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set as the service stops, before its background tasks are cancelled: each ends on it too (a cancellation can
    be lost on its way in), background jobs included."""
    telemetry: ServiceTelemetry = field(init=False)

    def __post_init__(self) -> None:
        self.telemetry = ServiceTelemetry(self)

    @property
    def name(self) -> str:
        return self.definition.name

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Log lines, metrics and spans of work started here (and in the tasks it starts) are this service's."""
        with service_scope(self.name), metrics_scope(self.telemetry.metrics):
            yield

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None, "service not started"
        return self.pool

    @property
    def connections_needed(self) -> int:
        """While a rebuild swaps tables in, every consumer and timer may wait on the writer lock holding a pooled
        connection for each batch it has committing, and be reading its next batch on another (`pull_loop`); the
        outbox relay still needs two (its lock and a batch) to drain the outbox the swap waits for, and one is left
        for queries."""
        return (COMMITS_IN_FLIGHT + 1) * len(self.consumers) + len(self.definition.handlers.timers) + 3

    @property
    def jetstream(self) -> JetStreamContext:
        assert self.js is not None, "service not started"
        return self.js

    @property
    def database_url(self) -> str:
        return self.settings.service_database_url()

    def wake_relay(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    # --- start-up, in the order FastStream calls the hooks ------------------------------------------------

    async def connect(self) -> None:
        """Database (migrated), JetStream, the streams this service owns or waits for, its durable consumers."""
        self.stopping.clear()  # an app started again after a stop
        if self.settings.http_port is not None:
            # First: /healthz answers while migrations or a first build of the projection take their time.
            await self.telemetry.start_probes(self.settings.http_host, self.settings.http_port)
        self.pool = await create_pool(
            self.database_url,
            min_size=self.settings.pool_min_size,
            max_size=max(self.settings.pool_max_size, self.connections_needed),
            search_path=SEARCH_PATH,
        )
        if self.definition.database is not None:
            self.definition.database.bind(self.pool)
        public = [("platform", files("mtm.platform") / "migrations")]
        if self.definition.keeps_keys:
            public.append(("keys", files("mtm.platform") / "migrations" / "keeper"))
            self.key_store = KeyStore(self.pool, self.settings.kek(), announce=self._announce_keys)
        if self.definition.migrations is not None:
            public.append((self.name, self.definition.migrations))
        applied = await apply_migrations(self.pool, public, [(LIVE_SCHEMA, self.definition.projection_scopes)])
        await self.broker.connect()
        self.js = self.broker.connection.jetstream(publish_async_max_pending=8000)
        assert self.reader is not None
        if not self.definition.keeps_keys:
            await hear_keys(self.broker.connection, self.reader.keyring)
        self.reader.bodies = EventBodies(self.broker.connection)
        self.patient_log = PatientLog(self.broker.connection, self.js, self.reader, seal=self.settings.seal_events)
        await self._declare_streams()
        await self._declare_durables()
        max_payload = self.broker.connection.max_payload
        self.relay = OutboxRelay(
            self.pool,
            self.js,
            poll_s=self.settings.outbox_poll_s,
            stored=self.patient_log.holds,
            # Past half the server's deduplication window, a row sent before is looked up before it is resent.
            trust_dedup_s=self.settings.duplicate_window_s / 2,
            max_payload=max_payload,
            sealer=Sealer(self.reader.keyring, self._sealed) if self.settings.seal_events else None,
            bodies=self.reader.bodies,
        )
        for consumer in self.consumers:
            self.processors[consumer.durable] = BatchProcessor(
                consumer,
                service=self.name,
                pool=self.pool,
                js=self.js,
                max_deliver=self.settings.max_deliver,
                max_bytes=self.settings.max_message_bytes,
                max_payload=max_payload,
                after_commit=self.wake_relay,
                observe_batch=self.telemetry.observe_batch(consumer.durable),
            )
        if f"{LIVE_SCHEMA}:platform/001_applied_events" in applied:
            await self._build_new_projection()

    async def _declare_streams(self) -> None:
        settings = self.settings
        max_age = {"forever": 0.0, "intake": settings.intake_max_age_s, "dead-letters": settings.dead_letter_max_age_s}
        for spec in (*self.definition.owned_streams, dead_letter_stream(self.name)):
            await declare_stream(
                self.jetstream,
                spec,
                replicas=settings.stream_replicas,
                duplicate_window_s=settings.duplicate_window_s,
                max_age_s=max_age[spec.kept_for],
            )
        await declare_dead_letter_bodies(
            self.jetstream, self.name, replicas=settings.stream_replicas, max_age_s=settings.dead_letter_max_age_s
        )
        for name in self.definition.consumed_streams:
            await wait_for_stream(self.jetstream, name, timeout_s=settings.startup_timeout_s)

    async def _declare_durables(self) -> None:
        for consumer in self.consumers:
            groups = groups_of(consumer, self.settings)
            for group in range(groups):
                durable = group_durable(consumer, group, groups)
                if consumer.retiring:
                    await self._find_retired(consumer, durable)
                    continue
                await ensure_durable(
                    self.jetstream,
                    DurableSpec(
                        stream=consumer.stream,
                        durable=durable,
                        filter_subjects=consumer.group_filters(group, groups),
                        max_deliver=self.settings.max_deliver,
                        ack_wait_s=self.settings.ack_wait_s,
                        max_ack_pending=self.settings.batch_size * 4,
                    ),
                )

    async def _find_retired(self, consumer: BatchConsumer[Any], durable: str) -> None:
        """A retiring consumer's durable, left by an earlier version, is drained; usually it is not there at all."""
        try:
            info = await self.jetstream.consumer_info(consumer.stream, durable)
        except js_errors.NotFoundError:
            return
        self.draining.add(durable)
        # `count`: the messages it holds, not read yet or not acknowledged.
        log.info("retired consumer found; draining it", consumer=durable, count=info.num_pending + info.num_ack_pending)

    async def retire_if_drained(self, consumer: BatchConsumer[Any], durable: str) -> bool:
        """Delete a retiring consumer's durable once nothing is pending or unacknowledged on it; whether it is gone.

        Asked when a fetch found nothing or a small batch committed: each batch this process took is then
        acknowledged after its commit, or still counted unacknowledged by the server (a commit in flight, a
        redelivery scheduled), so the durable never goes with a message in hand. A service stopped before then finds
        the durable at its next start.
        """
        try:
            info = await self.jetstream.consumer_info(consumer.stream, durable)
            if info.num_pending or info.num_ack_pending:
                return False
            await self.jetstream.delete_consumer(consumer.stream, durable)
        except js_errors.NotFoundError:
            self.draining.discard(durable)
            log.info("retired consumer deleted by another replica", consumer=durable)
            return True
        except Exception as exc:
            log.warning("retired consumer not checked; checking again", consumer=durable, error_type=type(exc).__name__)
            return False
        self.draining.discard(durable)
        processor = self.processors[consumer.durable]
        # Counts of the consumer's deliveries in this process (all its groups): read, with an effect, parked.
        log.info(
            "retired consumer drained and deleted",
            consumer=durable,
            count=processor.consumed,
            applied=processor.applied,
            parked=processor.parked,
        )
        return True

    async def _build_new_projection(self) -> None:
        """A projection created just now (new database, new service) is built from the log before consuming."""
        if (await self.jetstream.stream_info(PATIENT_EVENTS_STREAM)).state.messages == 0:
            return
        log.info("building the new projection from the log")
        await self.rebuilder().run()

    def rebuilder(self, progress: Any = None) -> Rebuilder:
        kwargs = {"progress": progress} if progress is not None else {}
        assert self.reader is not None
        return Rebuilder(
            database_url=self.database_url,
            js=self.jetstream,
            reader_name=rebuild_reader_name(self.name),
            projection=self.definition.handlers.projection,
            scopes=self.definition.projection_scopes,
            reader=self.reader,
            stopping=self.stopping,
            **kwargs,
        )

    # --- patients' keys ------------------------------------------------------------------------------------

    async def fetch_keys(self, patient_ids: Sequence[str], create: bool) -> tuple[dict[str, PatientKey], set[str]]:
        """From the service's own key table when it keeps them, else from the keeper over NATS."""
        if self.key_store is not None:
            return await self.key_store.fetch(patient_ids, create)
        return await nats_key_source(self.broker.connection)(patient_ids, create)

    async def _announce_keys(self, keys: dict[str, PatientKey]) -> None:
        """The keeper tells the readers of the keys it just made: they read the patients' first events next."""
        await announce_keys(self.broker.connection, keys)

    def _sealed(self, subject: str) -> bool:
        try:
            return self.definition.registry.current(event_name_of_subject(subject)).SEALED
        except UnknownEvent:
            return True

    async def erase_patient(self, request: ErasePatient, actor: Actor) -> CommandReply:
        """Destroy the patient's key and tell every service to forget them (only the key keeper answers)."""
        assert self.key_store is not None
        now = datetime.now(UTC)
        erased = PatientErased.create(
            source=f"mtm/{self.name}",
            patient_id=request.patient_id,
            data=Erasure(patient_id=request.patient_id, reason=request.reason, actor=actor),
            causation_id=request.command_id,
            event_id=uuid.uuid5(ERASURE_NAMESPACE, request.patient_id),
            time=now,
        )
        async with self.db.acquire() as conn, conn.transaction():
            first = await self.key_store.erase(conn, request.patient_id, request.reason)
            uow = UnitOfWork(conn, self.definition.handlers.projection)
            await uow.begin()
            await uow.record([erased])
        assert self.reader is not None
        self.reader.keyring.forget(request.patient_id)
        self.wake_relay()
        log.info("patient erased", patient_ref=f"Patient/{request.patient_id}", outcome="accepted")
        message = "patient erased" if first else "patient was erased before"
        return CommandReply(outcome="accepted", message=message, resource_id=request.patient_id, status="erased")

    @property
    def group_keys(self) -> list[GroupKey]:
        """Every consumer group of the service, whichever replica holds it; a retiring consumer's only while its
        durable is still there to drain."""
        keys = []
        for consumer in self.consumers:
            groups = groups_of(consumer, self.settings)
            for group in range(groups):
                if consumer.retiring and group_durable(consumer, group, groups) not in self.draining:
                    continue
                keys.append(GroupKey(consumer.durable, group, groups))
        return keys

    def durable_of(self, key: GroupKey) -> str:
        consumer = next(c for c in self.consumers if c.durable == key.consumer)
        return group_durable(consumer, key.group, key.groups)

    async def start_consuming(self) -> None:
        """Relay, consumer-group leases (each held group gets a pull loop), background jobs."""
        assert self.relay is not None
        self.relay.start()
        self.leases = GroupLeases(
            self._lease_connection,
            self.group_keys,
            replicas=self.settings.replicas,
            replica_index=self.settings.replica_index,
            takeover_after_s=self.settings.takeover_after_s,
            start=self._start_group,
            stop=self._stop_group,
        )
        self.leases.start()
        await self.leases.wait_first_round()
        for job in self.definition.background_jobs:
            self._supervised(job.__name__, lambda health, job=job: job(self))
        projection = self.definition.handlers.projection
        for timer in self.definition.handlers.timers:
            self._supervised(
                f"timer-{timer.name}",
                lambda health, timer=timer: run_timer(
                    self.db, timer, projection, after_record=self.wake_relay, stopping=self.stopping, health=health
                ),
            )
        self.serving = True
        log.info("service started", database=urlsplit(self.database_url).path.lstrip("/"))

    def _supervised(self, name: str, run: Callable[[TaskHealth], Awaitable[None]]) -> None:
        """A background task restarted after any failure; its health counts toward the service's readiness."""
        health = TaskHealth(name)
        self.task_health.append(health)
        self.background.append(asyncio.create_task(supervise(name, run, health, self.stopping), name=name))

    def readiness(self) -> Readiness:
        """Ready when it pulls from the groups it should hold and no background task keeps failing."""
        # A retiring consumer is not what the service serves: its pull loop ends once drained, and another replica
        # may hold its lease until that replica stops.
        retiring = {c.durable for c in self.consumers if c.retiring}
        serving = [key for key in self.group_keys if key.consumer not in retiring]
        reasons, pulling = lease_readiness(
            self.leases if self.serving else None, serving, self.pull_loops, self.durable_of
        )
        tasks = [*self.task_health, *([self.relay.health] if self.relay is not None else [])]
        failing = tuple(
            f"{h.name}: failing ({h.last_error}, {h.failures} times in a row)" for h in tasks if not h.healthy
        )
        # Serving means connected once; nats-py reconnects on its own, and until then the service is not ready.
        nats = ("nats: not connected",) if self.serving and not self.broker.connection.is_connected else ()
        return (*reasons, *failing, *nats), pulling

    async def _lease_connection(self) -> asyncpg.Connection:
        # Named, so an operator (and the fault tests) can tell the session that holds the consumer groups.
        return await asyncpg.connect(
            self.database_url, timeout=10, server_settings={"application_name": f"mtm-{self.name}-leases"}
        )

    async def _start_group(self, key: GroupKey) -> None:
        consumer = next(c for c in self.consumers if c.durable == key.consumer)
        stop = asyncio.Event()
        durable = self.durable_of(key)
        task = asyncio.create_task(self._pull_while_held(consumer, durable, stop), name=f"pull-{durable}")
        self.pull_loops[key] = (task, stop)

    async def _pull_while_held(self, consumer: BatchConsumer[Any], durable: str, stop: asyncio.Event) -> None:
        """The group's pull loop, started again after a failure until the group is let go.

        A pull loop that failed used to end for good with its lease still held: nothing read the durable again, and
        nothing said so. Under load the program's lingering consumers ended so (an empty list from nats-py's fetch,
        handled in the loop now), their messages pending for ever; this is the backstop for whatever else may.
        """
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await pull_loop(self, consumer, durable, stop)
                return
            except Exception as exc:
                # A loop that ran a good while before failing starts again at the first back-off.
                failures = 1 if time.monotonic() - started > PULL_LOOP_HEALTHY_AFTER_S else failures + 1
                log.warning(
                    "pull loop failed; starting it again",
                    consumer=consumer.durable,
                    attempt=failures,
                    error_type=type(exc).__name__,
                )
                await until_set(backoff(failures - 1), stop, self.stopping)
                if stop.is_set() or self.stopping.is_set():
                    return

    async def _stop_group(self, key: GroupKey) -> None:
        held = self.pull_loops.pop(key, None)
        if held is None:  # already released: a lost lease session and a shutdown may both let a group go
            return
        task, stop = held
        # Let the batch in hand finish (its transaction and acks) before the lease goes.
        stop.set()
        _, pending = await asyncio.wait([task], timeout=PULL_WAIT_S + 5)
        for late in pending:
            late.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def stop_consuming(self) -> None:
        self.serving = False
        self.stopping.set()
        for processor in self.processors.values():
            processor.stopping.set()
        if self.leases is not None:
            await self.leases.stop()
        for task in (*self.background, *([self.rebuild] if self.rebuild else [])):
            task.cancel()
        await asyncio.gather(*self.background, *([self.rebuild] if self.rebuild else []), return_exceptions=True)
        if self.relay is not None:
            await self.relay.stop()

    async def close(self) -> None:
        if self.pool is not None:
            # A graceful close waits for every connection to come back; one held by a stuck task must not hold
            # the shutdown forever, so past a grace period the rest are closed hard.
            try:
                await asyncio.wait_for(self.pool.close(), POOL_CLOSE_S)
            except TimeoutError:
                log.warning("connections still in use at shutdown; closing them")
                self.pool.terminate()
        await self.telemetry.stop_probes()
        log.info("service stopped")

    # --- what the service answers --------------------------------------------------------------------------

    async def execute(self, command: Command[Any], body: Any, actor: Actor) -> CommandReply:
        """Decide on the patient's history from the log, append with OCC, reply once the projection shows it."""
        async with self.db.acquire() as conn:
            patient_id = await command.locate(conn, body)
        if patient_id is None:
            return CommandReply(outcome="not_found", message=command.not_found)
        assert self.patient_log is not None
        await self._wait_relayed(patient_id)
        for _ in range(OCC_ATTEMPTS):
            history = await self.patient_log.read(patient_id, command.reads)
            decision = command.decide(history, body, actor, datetime.now(UTC))
            if not decision.events:
                return decision.reply
            span = _append_span(history, decision.events) if tracing.enabled() else None
            try:
                await self.patient_log.append(
                    decision.events,
                    expected_last_seq=history.last_seq,
                    headers=tracing.headers_for(tracing.context_of(span)),
                )
            except ConcurrencyConflict as exc:
                tracing.failed(span, exc)
                continue
            except TooLargeForTheLog as exc:
                tracing.failed(span, exc)
                return CommandReply(outcome="invalid", message=str(exc))
            finally:
                if span is not None:
                    span.end()
            await self._wait_applied(decision.events[-1].id)
            return decision.reply
        return CommandReply(outcome="conflict", message="the patient's record kept changing; try again")

    async def _wait_relayed(self, patient_id: str) -> None:
        """Until what this service recorded of the patient is on the log (bounded): the tables may show a task the
        relay has not published yet, and a command decided on the log without it would not find it."""
        deadline = asyncio.get_running_loop().time() + self.settings.command_apply_wait_s
        token = subject_token(patient_id)
        async with self.db.acquire() as conn:
            while await conn.fetchval(PATIENT_IN_OUTBOX, token):
                if self.relay is not None:
                    self.relay.wake()
                if asyncio.get_running_loop().time() > deadline:
                    log.warning(
                        "command decided before the outbox reached the log", patient_ref=f"Patient/{patient_id}"
                    )
                    return
                await asyncio.sleep(APPLIED_POLL_S)

    async def _wait_applied(self, event_id: Any) -> None:
        """Until the projection applied the event, so a query right after the reply sees it (bounded)."""
        deadline = asyncio.get_running_loop().time() + self.settings.command_apply_wait_s
        async with self.db.acquire() as conn:
            while not await is_applied(conn, event_id):
                if asyncio.get_running_loop().time() > deadline:
                    log.warning("command reply sent before its event was applied", event_id=str(event_id))
                    return
                await asyncio.sleep(APPLIED_POLL_S)

    async def start_rebuild(self, request: RebuildProjection) -> CommandReply:
        if self.rebuild is not None and not self.rebuild.done():
            return CommandReply(outcome="conflict", message="a rebuild is already running in this instance")
        subject = rebuild_progress_subject(self.name, request.rebuild_id)

        async def progress(phase: str, applied: int, total: int, rate: float, message: str) -> None:
            report = RebuildProgress(
                rebuild_id=request.rebuild_id,
                service=self.name,
                phase=phase,  # type: ignore[arg-type]
                applied=applied,
                total=total,
                events_per_s=rate,
                message=message,
            )
            with contextlib.suppress(Exception):
                await self.broker.connection.publish(subject, report.model_dump_json().encode())

        async def run() -> RebuildResult:
            try:
                return await self.rebuilder(progress).run()
            except RebuildBusy as exc:
                await progress("failed", 0, 0, 0.0, str(exc))
                raise
            except Exception as exc:
                log.exception("rebuild failed", error_type=type(exc).__name__)
                await progress("failed", 0, 0, 0.0, f"rebuild failed ({type(exc).__name__}); see the service log")
                raise

        self.rebuild = asyncio.create_task(run(), name="rebuild")
        return CommandReply(outcome="accepted", message="rebuild started", resource_id=str(request.rebuild_id))


def _append_span(history: Any, events: Sequence[Any]) -> Any:
    """A command's events continue their flow's trace after the latest event of the same flow in the history (the
    request's own span, in its caller's trace, is linked)."""
    flow = events[0].correlation_id
    parent = next(
        (stored.trace for stored in reversed(history.events) if stored.event.correlation_id == flow and stored.trace),
        None,
    )
    return tracing.start(
        f"publish {type(events[0]).EVENT_NAME}",
        kind=tracing.PRODUCER,
        flow=flow,
        headers=parent,
        links=[tracing.current_context()],
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "send",
            "messaging.destination.template": tracing.subject_template(f"mtm.patient.0.p.{events[0].EVENT_NAME}.v1"),
            "messaging.message.id": str(events[0].id),
            "messaging.batch.message_count": len(events),
            "mtm.event_type": type(events[0]).EVENT_NAME,
            "mtm.correlation_id": str(flow),
        },
    )


PULL_WAIT_S = 1.0
# A pull loop that failed after running this long counts as having been healthy (its restart waits the least).
PULL_LOOP_HEALTHY_AFTER_S = 60.0
# Batches of one consumer committing at once, each in its own transaction and with its own pooled connection (two
# measured 3 % of the service's time idle on Postgres against 12-19 % with one).
COMMITS_IN_FLIGHT = 2
# Batches overlap only when one fills at least this share of the batch size: a backlog to work through.
OVERLAP_FROM = 0.25
# A pull request that finds nothing waits this long for more before returning what it has.
TOP_UP_WAIT_S = 0.002


async def next_batch(subscription: Any, size: int) -> list[Any]:
    """What is there now, up to `size`; when nothing is, the first message to arrive and whatever came with it.

    nats-py's `fetch(batch=n)` returns at once when messages are waiting, but once it has to wait it keeps the
    request open until all `n` arrived or the timeout passed, which would hold a lone message back for up to
    the whole timeout. Waiting for one and then topping up keeps both big batches under load and low latency.
    """
    with contextlib.suppress(TimeoutError):
        if waiting := await subscription.fetch(batch=size, timeout=TOP_UP_WAIT_S):
            return waiting  # (an empty list, which nats-py may return, waits below like a timeout)
    batch = await subscription.fetch(batch=1, timeout=PULL_WAIT_S)
    if size > 1:
        with contextlib.suppress(TimeoutError):
            batch += await subscription.fetch(batch=size - 1, timeout=TOP_UP_WAIT_S)
    return batch


async def gathered_batch(subscription: Any, size: int, linger_s: float) -> list[Any]:
    """What arrives within `linger_s`, up to `size` (at once when `size` are waiting); TimeoutError if nothing does.

    The pull request stays open on the server, which delivers each message as it comes, so the durable never
    holds a backlog for this consumer. A consumer that instead slept between fetches, measured on the bench's fill
    ingestion, made the server's CPU per fill rise fourfold (0.05 to 0.19-0.24 ms; cause not traced).
    """
    return await subscription.fetch(batch=size, timeout=linger_s)


def groups_of(consumer: BatchConsumer[Any], settings: ServiceSettings) -> int:
    return settings.consumer_groups if consumer.partitioned_by else 1


def group_durable(consumer: BatchConsumer[Any], group: int, groups: int) -> str:
    """The server-side durable of one group; a single group keeps the consumer's own name."""
    return group_durable_name(consumer.durable, group, groups)


async def pull_loop(runtime: ServiceRuntime, consumer: BatchConsumer[Any], durable: str, stop: asyncio.Event) -> None:
    """Fetch batches from the durable and hand each to its processor, reading the next while earlier ones commit.

    With a backlog, a batch is read (decoded, its lookups made, its reactions decided) while up to
    `COMMITS_IN_FLIGHT` earlier batches commit, each in its own transaction, so the service is not idle while
    Postgres works; a small batch (no backlog) is committed before the next is fetched. Batches overlap
    only when they share no patient (`order_key`): a batch with a patient of a commit in flight waits for that
    commit before being read, so a patient's events are decided on the state its earlier ones left and committed
    in their order.

    FastStream 0.7.8's batch pull loop catches `nats.errors.TimeoutError`, but nats-py 2.16 raises the builtin
    `TimeoutError` from `fetch`, which drops a partially gathered batch until its ack wait expires; this loop
    keeps the nats-py semantics as they are.
    """
    processor = runtime.processors[consumer.durable]
    if consumer.retiring and durable not in runtime.draining:
        return  # deleted once drained, before this lease was taken again (a lease session lost and found)
    subscription = await runtime.jetstream.pull_subscribe_bind(durable=durable, stream=consumer.stream)
    in_flight: list[tuple[asyncio.Task[None], set[str]]] = []
    batch_size = runtime.settings.batch_size
    gather = False
    try:
        while not stop.is_set():
            messages: list[Any] | None = None
            try:
                if gather:
                    messages = await gathered_batch(subscription, batch_size, consumer.linger_s)
                else:
                    messages = await next_batch(subscription, batch_size)
            except TimeoutError:
                gather = False
            except (
                nats_errors.ConnectionClosedError,
                nats_errors.ConnectionReconnectingError,
                js_errors.ServiceUnavailableError,
            ):
                await asyncio.sleep(0.5)
            except Exception as exc:
                # nats-py's own errors, and anything else a fetch raises: an unexpected one must not end the loop
                # while its group's lease is held (nobody would read the durable again).
                log.warning("fetch failed; retrying", consumer=consumer.durable, error_type=type(exc).__name__)
                await asyncio.sleep(0.5)
            if not messages:
                # Nothing fetched: an empty durable, or one another replica deleted (no one answers the request).
                # nats-py's fetch also returns an empty list when its pull request ends with a status before any
                # message; taken as a batch, it ended the loop (an IndexError below) with the lease still held.
                gather = False
                if consumer.retiring and await runtime.retire_if_drained(consumer, durable):
                    return
                continue
            keys = {order_key(m.subject) for m in messages}
            conflicting = [commit for commit, held in in_flight if not held.isdisjoint(keys)]
            if conflicting:
                await asyncio.wait(conflicting)
            in_flight = await _still_committing(in_flight, consumer)
            try:
                batch = await processor.read(messages)
            except Exception as exc:
                log.exception("batch handling failed", consumer=consumer.durable, error_type=type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            while len(in_flight) >= COMMITS_IN_FLIGHT:
                await _committed(in_flight.pop(0)[0], consumer)
            in_flight.append((asyncio.create_task(processor.commit(batch), name=f"commit-{durable}"), keys))
            if len(messages) < batch_size * OVERLAP_FROM:
                # No backlog: a batch read beside this commit would hold a message or two and cost a transaction of
                # its own. The bench's latency at 500/s, p50 over alternating runs on an idle machine: 127 ms
                # without overlap, 175 ms overlapping every batch, 162 ms with this rule (noisy: 94-226 ms).
                while in_flight:
                    await _committed(in_flight.pop(0)[0], consumer)
                # Caught up: under a steady feed a fetch may never come back empty, but a small batch that took the
                # last message waiting leaves the durable empty, once committed, until the next one arrives.
                caught_up = consumer.retiring and _left_nothing_waiting(messages)
                if caught_up and await runtime.retire_if_drained(consumer, durable):
                    return
            # Nobody waits on a lingering consumer: rather than a transaction for every message or two of a trickle,
            # the next batch gathers for a while. A backlog never lingers: the batch that finds one is full, or the
            # server says more is waiting, so a steady stream is taken at full speed.
            gather = bool(consumer.linger_s) and len(messages) < batch_size and _left_nothing_waiting(messages)
    finally:
        for commit, _ in in_flight:
            await _committed(commit, consumer)
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()


def _left_nothing_waiting(messages: Sequence[Any]) -> bool:
    """The durable had nothing more waiting when the batch's last message was delivered (its JetStream metadata)."""
    try:
        return bool(messages[-1].metadata.num_pending == 0)
    except (IndexError, AttributeError, nats_errors.Error):
        return False


async def _still_committing(
    in_flight: list[tuple[asyncio.Task[None], set[str]]], consumer: BatchConsumer[Any]
) -> list[tuple[asyncio.Task[None], set[str]]]:
    """The commits not done yet; those done are collected (a failure logged)."""
    for commit, _ in in_flight:
        if commit.done():
            await _committed(commit, consumer)
    return [(commit, held) for commit, held in in_flight if not commit.done()]


async def _committed(commit: asyncio.Task[None], consumer: BatchConsumer[Any]) -> None:
    """Wait for a batch's commit; a failure is logged, and its unacknowledged messages come back after ack_wait."""
    try:
        await commit
    except Exception as exc:
        log.exception("batch handling failed", consumer=consumer.durable, error_type=type(exc).__name__)
        await asyncio.sleep(0.5)


def _raw_body(message: Any) -> Any:
    # Bodies are validated by our own contracts so that a bad one gets an answer naming the field.
    return message.body


Answer = Callable[[Any, Actor], Awaitable[CommandReply]]
REPLY_HEADROOM = 4 * 1024


def _encoded(reply: CommandReply) -> bytes:
    return reply.model_dump_json().encode()


def _reply_subscription(
    runtime: ServiceRuntime,
    subject: str,
    model: type[BaseModel],
    answer: Answer,
    roles: tuple[Role, ...],
    **kw: Any,
) -> None:
    """Verify the actor, validate the request against its contract, answer; never let an exception escape.

    A request without a valid actor token, or from a role that may not send it, is refused before its body is
    read, and nothing is recorded; the refusal is logged with ids only.
    """

    async def respond(msg: NatsMessage) -> tuple[bytes, str]:
        try:
            actor = runtime.verifier.verify((msg.headers or {}).get(ACTOR_TOKEN_HEADER))
            require_role(actor, roles)
        except (Unauthorized, Forbidden) as exc:
            outcome = "unauthorized" if isinstance(exc, Unauthorized) else "forbidden"
            log.warning("request refused", subject=subject, outcome=outcome)
            return _encoded(CommandReply(outcome=outcome, message=str(exc))), outcome
        if has_nul(msg.body):
            return _encoded(CommandReply(outcome="invalid", message=NUL_REFUSED)), "invalid"
        try:
            request = model.model_validate_json(msg.body)
        except ValidationError as exc:
            return _encoded(CommandReply(outcome="invalid", message=describe_invalid(exc))), "invalid"
        except RecursionError:
            return _encoded(CommandReply(outcome="invalid", message="body: nested too deeply to read")), "invalid"
        try:
            reply = await answer(request, actor)
        except Exception as exc:
            log.exception("request failed", subject=subject, error_type=type(exc).__name__)
            reply = CommandReply(outcome="error", message=f"internal error ({type(exc).__name__})")
        body = _encoded(reply)
        if len(body) > runtime.broker.connection.max_payload - REPLY_HEADROOM:
            # One reply is one message: a list that does not fit must be read in smaller pages.
            too_large = "the answer is too large for one message; ask for a smaller page (limit)"
            return _encoded(CommandReply(outcome="invalid", message=too_large)), "invalid"
        return body, reply.outcome

    async def on_request(msg: NatsMessage) -> bytes:
        started = time.perf_counter()
        span = (
            tracing.start(
                f"request {subject}",
                kind=tracing.SERVER,
                headers=msg.headers,
                attributes={"messaging.system": "nats", "messaging.destination.name": subject},
            )
            if tracing.enabled()
            else None
        )
        with tracing.active(span):
            body, outcome = await respond(msg)
            if span is not None:
                span.set_attribute("mtm.outcome", outcome)
        runtime.telemetry.answered(subject, outcome, time.perf_counter() - started)
        return body

    on_request.__name__ = "on_" + subject.replace(".", "_")
    runtime.broker.subscriber(subject, decoder=_raw_body, **kw)(on_request)
    runtime.answering.append(Answering(subject, model, roles, kw.get("queue")))


def _subscribe_command(runtime: ServiceRuntime, command: Command[Any]) -> None:
    async def answer(body: Any, actor: Actor) -> CommandReply:
        return await runtime.execute(command, body, actor)

    _reply_subscription(runtime, command.subject, command.model, answer, command.roles, queue=runtime.name)


def _subscribe_query(runtime: ServiceRuntime, query: Query[Any]) -> None:
    async def answer(body: Any, actor: Actor) -> CommandReply:
        async with runtime.db.acquire() as conn:
            return await query.run(conn, body, actor)

    _reply_subscription(runtime, query.subject, query.model, answer, query.roles, queue=runtime.name)


def _subscribe_admin(runtime: ServiceRuntime) -> None:
    # Readiness over NATS (`mtm up`, the bench): ready once this instance pulls from the groups it holds.
    answer_status(
        runtime.broker,
        runtime.name,
        runtime.readiness,
    )
    runtime.answering.append(Answering(status_subject(runtime.name), GetServiceStatus, (), None, ServiceStatus))

    async def rebuild(request: RebuildProjection, actor: Actor) -> CommandReply:
        log.info("rebuild requested", outcome="accepted", reason_code=actor.role)
        return await runtime.start_rebuild(request)

    _reply_subscription(
        runtime, rebuild_subject(runtime.name), RebuildProjection, rebuild, ("admin",), queue=f"{runtime.name}-admin"
    )
    _subscribe_dead_letters(runtime)
    if runtime.definition.keeps_keys:
        _reply_subscription(
            runtime, ERASE_PATIENT, ErasePatient, runtime.erase_patient, ("admin",), queue=f"{runtime.name}-admin"
        )
        _subscribe_key_requests(runtime)


def _subscribe_dead_letters(runtime: ServiceRuntime) -> None:
    """An admin lists, reads and redrives the service's dead letters (`mtm dead-letters`)."""
    from mtm.contracts.dead_letter import GetDeadLetter, ListDeadLetters, RedriveDeadLetter, dead_letters_subject
    from mtm.platform.dead_letters import DeadLetters

    grant = next((g for g in ACCESS.services if g.service == runtime.name), None)

    def letters() -> DeadLetters:
        return DeadLetters(runtime.jetstream, runtime.name, grant.may_publish if grant is not None else None)

    for action, model, answer in (
        ("list", ListDeadLetters, lambda request, actor: letters().list(request, actor)),
        ("get", GetDeadLetter, lambda request, actor: letters().get(request, actor)),
        ("redrive", RedriveDeadLetter, lambda request, actor: letters().redrive(request, actor)),
    ):
        _reply_subscription(
            runtime,
            dead_letters_subject(runtime.name, action),
            model,
            answer,
            ("admin",),
            queue=f"{runtime.name}-admin",
        )


def _subscribe_key_requests(runtime: ServiceRuntime) -> None:
    """The keeper lends patients' keys to the other services (NATS permissions restrict who may ask)."""

    async def on_keys(msg: NatsMessage) -> bytes:
        try:
            request = GetPatientKeys.model_validate_json(msg.body)
        except ValidationError as exc:
            return CommandReply(outcome="invalid", message=describe_invalid(exc)).model_dump_json().encode()
        keys, erased = await runtime.fetch_keys(request.patient_ids, request.create)
        return key_reply(keys, erased, request.patient_ids).model_dump_json().encode()

    runtime.broker.subscriber(PATIENT_KEYS, queue=f"{runtime.name}-keys", decoder=_raw_body)(on_keys)
    runtime.answering.append(Answering(PATIENT_KEYS, GetPatientKeys, (), f"{runtime.name}-keys", PatientKeys))


class ServiceApp(FastStream):
    """A service's FastStream app: starting and stopping run in the service's scope, so every task it starts
    (pull loops, relay, timers, FastStream's subscriptions) logs, counts and traces as this service, also when
    several services share a process."""

    runtime: ServiceRuntime

    async def start(self, **run_extra_options: Any) -> None:
        with self.runtime.scope():
            await super().start(**run_extra_options)

    async def stop(self) -> None:
        with self.runtime.scope():
            await super().stop()


def create_app(definition: ServiceDefinition, settings: ServiceSettings) -> FastStream:
    """The one composition root of a service process."""
    configure_logging(None, settings.log_level, settings.log_format)
    if not tracing.enabled():
        tracing.configure_from_environment(definition.name)
    broker = NatsBroker(
        **settings.nats().broker_options(),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        name=f"mtm-{definition.name}",
        graceful_timeout=10.0,
        # FastStream's own lines go through the process's JSON handler like every other (its default prints text).
        logger=logging.getLogger("faststream.access.nats"),
        log_level=10,
    )
    runtime = ServiceRuntime(
        definition=definition,
        settings=settings,
        broker=broker,
        consumers=[],
        verifier=TokenVerifier(settings.actor_keys()),
    )
    runtime.reader = EventReader(definition.registry, KeyRing(runtime.fetch_keys))
    runtime.consumers = definition.consumers(runtime.reader)
    for command in definition.handlers.commands:
        _subscribe_command(runtime, command)
    for query in definition.handlers.queries:
        _subscribe_query(runtime, query)
    _subscribe_admin(runtime)
    app = ServiceApp(
        broker,
        logger=logging.getLogger("faststream"),
        on_startup=[runtime.connect],
        after_startup=[runtime.start_consuming],
        on_shutdown=[runtime.stop_consuming],
        after_shutdown=[runtime.close],
    )
    app.runtime = runtime
    return app


# Python's cyclic GC rescans every live object on full collections: the drug vocabulary and knowledge base are
# hundreds of thousands of them. Measured on the reconciliation and review paths, that cost 3-8x the work itself.
GC_THRESHOLDS = (50_000, 50, 1_000)


async def _freeze_startup_heap() -> None:
    """Move what start-up built (modules, vocabulary, knowledge base) out of the collector's sight for good."""
    gc.collect()
    gc.freeze()


def serve(factory: Callable[[], FastStream]) -> None:
    """Run a service process until SIGTERM/SIGINT, on uvloop where available (asyncpg and nats-py run faster on it)."""
    gc.set_threshold(*GC_THRESHOLDS)
    app = factory()
    runtime = getattr(app, "runtime", None)
    if runtime is not None:
        own_process(runtime.name)
    # After the start-up hooks (pool, migrations, a first build of the projection), before the consumers and the
    # broker's subscriptions start: a full collection then stalls nothing the service has started serving.
    app.on_startup(_freeze_startup_heap)
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(app.run())
            return
        uvloop.run(app.run())
    finally:
        tracing.shutdown()
