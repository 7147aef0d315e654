"""Composition of one service process: broker, pool, streams, durable consumers, outbox relay, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import asyncpg
from faststream import AckPolicy, FastStream
from faststream.nats import NatsBroker, NatsMessage
from nats import errors as nats_errors
from nats.js import JetStreamContext
from nats.js import errors as js_errors
from pydantic import BaseModel, ValidationError

from mtm.contracts import CommandReply
from mtm.platform.consumer import BatchConsumer, BatchProcessor, describe_invalid
from mtm.platform.db import apply_migrations, create_pool
from mtm.platform.leases import GroupKey, GroupLeases
from mtm.platform.logging import configure_logging, get_logger
from mtm.platform.outbox import OutboxRelay
from mtm.platform.settings import ServiceSettings
from mtm.platform.status import answer_status, lease_readiness
from mtm.platform.streams import (
    DurableSpec,
    StreamSpec,
    dead_letter_stream,
    declare_stream,
    ensure_durable,
    wait_for_stream,
)

log = get_logger(__name__)


@dataclass
class Runtime:
    """What handlers need at run time; filled in when the service starts, never at import."""

    settings: ServiceSettings
    broker: NatsBroker
    pool: asyncpg.Pool | None = None
    js: JetStreamContext | None = None
    relay: OutboxRelay | None = None
    processors: dict[str, BatchProcessor[Any]] = field(default_factory=dict)
    leases: GroupLeases | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None, "service not started"
        return self.pool

    @property
    def jetstream(self) -> JetStreamContext:
        assert self.js is not None, "service not started"
        return self.js

    def wake_relay(self) -> None:
        if self.relay is not None:
            self.relay.wake()


CommandHandler = Callable[[asyncpg.Connection, Any], Awaitable[CommandReply]]
BackgroundJob = Callable[[Runtime], Awaitable[None]]


@dataclass(frozen=True)
class CommandRoute:
    """A request/reply subject served by a queue group: validate, run in one transaction, reply."""

    subject: str
    model: type[BaseModel]
    handle: CommandHandler
    transactional: bool = True


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    migrations: Traversable
    owned_streams: tuple[StreamSpec, ...] = ()
    consumed_streams: tuple[str, ...] = ()
    consumers: Callable[[Runtime], Sequence[BatchConsumer[Any]]] = lambda _: ()
    commands: Callable[[Runtime], Sequence[CommandRoute]] = lambda _: ()
    background_jobs: Sequence[BackgroundJob] = ()


def create_app(definition: ServiceDefinition, settings: ServiceSettings) -> FastStream:
    """The one composition root of a service process."""
    configure_logging(definition.name, settings.log_level, settings.log_format)
    broker = NatsBroker(
        settings.nats_url,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        name=f"mtm-{definition.name}",
        graceful_timeout=10.0,
        log_level=10,
    )
    runtime = Runtime(settings=settings, broker=broker)
    consumers = list(definition.consumers(runtime))
    for route in definition.commands(runtime):
        _subscribe_command(runtime, definition.name, route)

    async def start() -> None:
        runtime.pool = await create_pool(
            settings.service_database_url(), min_size=settings.pool_min_size, max_size=settings.pool_max_size
        )
        await apply_migrations(
            runtime.pool, [("platform", files("mtm.platform") / "migrations"), (definition.name, definition.migrations)]
        )
        await broker.connect()
        runtime.js = broker.connection.jetstream(publish_async_max_pending=8000)
        owned = (*definition.owned_streams, dead_letter_stream(definition.name))
        for spec in owned:
            await declare_stream(
                runtime.js, spec, replicas=settings.stream_replicas, duplicate_window_s=settings.duplicate_window_s
            )
        for name in definition.consumed_streams:
            await wait_for_stream(runtime.js, name, timeout_s=settings.startup_timeout_s)
        for consumer in consumers:
            groups = _groups_of(consumer, settings)
            for group in range(groups):
                await ensure_durable(
                    runtime.js,
                    DurableSpec(
                        stream=consumer.stream,
                        durable=group_durable(consumer, group, groups),
                        filter_subjects=consumer.group_filters(group, groups),
                        max_deliver=settings.max_deliver,
                        ack_wait_s=settings.ack_wait_s,
                        max_ack_pending=settings.batch_size * 4,
                    ),
                )
        runtime.relay = OutboxRelay(runtime.pool, runtime.js, poll_s=settings.outbox_poll_s)
        for consumer in consumers:
            runtime.processors[consumer.durable] = BatchProcessor(
                consumer,
                service=definition.name,
                pool=runtime.pool,
                js=runtime.js,
                max_deliver=settings.max_deliver,
                after_commit=runtime.wake_relay,
            )

    by_name = {consumer.durable: consumer for consumer in consumers}
    loops: dict[GroupKey, tuple[asyncio.Task[None], asyncio.Event]] = {}
    keys = [
        GroupKey(consumer.durable, group, _groups_of(consumer, settings))
        for consumer in consumers
        for group in range(_groups_of(consumer, settings))
    ]
    # Readiness over NATS (`mtm up`, the bench): ready once this instance pulls from the groups it holds.
    answer_status(
        broker,
        definition.name,
        lambda: lease_readiness(
            runtime.leases, keys, loops, lambda key: group_durable(by_name[key.consumer], key.group, key.groups)
        ),
    )

    async def start_group(key: GroupKey) -> None:
        consumer = by_name[key.consumer]
        stop = asyncio.Event()
        durable = group_durable(consumer, key.group, key.groups)
        loops[key] = (asyncio.create_task(_pull_loop(runtime, consumer, durable, stop), name=f"pull-{durable}"), stop)

    async def stop_group(key: GroupKey) -> None:
        task, stop = loops.pop(key)
        # Let the batch in hand finish (its transaction and acks) before the lease goes.
        stop.set()
        _, pending = await asyncio.wait([task], timeout=PULL_WAIT_S + 5)
        for late in pending:
            late.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def lease_connection() -> asyncpg.Connection:
        return await asyncpg.connect(settings.service_database_url(), timeout=10)

    async def started() -> None:
        assert runtime.relay is not None
        runtime.relay.start()
        runtime.leases = GroupLeases(
            lease_connection,
            keys,
            replicas=settings.replicas,
            replica_index=settings.replica_index,
            takeover_after_s=settings.takeover_after_s,
            start=start_group,
            stop=stop_group,
        )
        runtime.leases.start()
        await runtime.leases.wait_first_round()
        for job in definition.background_jobs:
            runtime.background.append(asyncio.create_task(job(runtime), name=job.__name__))
        log.info("service started", database=settings.service_database_url().rsplit("/", 1)[-1])

    async def stopping_started() -> None:
        if runtime.leases is not None:
            await runtime.leases.stop()
        for task in runtime.background:
            task.cancel()
        await asyncio.gather(*runtime.background, return_exceptions=True)
        if runtime.relay is not None:
            await runtime.relay.stop()

    async def stopped() -> None:
        if runtime.pool is not None:
            await runtime.pool.close()
        log.info("service stopped")

    app = FastStream(
        broker, on_startup=[start], after_startup=[started], on_shutdown=[stopping_started], after_shutdown=[stopped]
    )
    app.runtime = runtime  # type: ignore[attr-defined]
    return app


def _raw_body(message: Any) -> Any:
    # Bodies are validated by our own contracts so that a bad one gets an answer naming the field.
    return message.body


# How long an idle consumer waits for its next message before looping (and noticing a stop).
PULL_WAIT_S = 1.0
# A pull request that finds nothing waits this long for more before returning what it has.
TOP_UP_WAIT_S = 0.002


async def next_batch(subscription: Any, size: int) -> list[Any]:
    """What is there now, up to `size`; when nothing is, the first message to arrive and whatever came with it.

    nats-py's `fetch(batch=n)` returns at once when messages are waiting, but once it has to wait it keeps the
    request open until all `n` arrived or the timeout passed, which would hold a lone message back for up to
    the whole timeout. Waiting for one and then topping up keeps both big batches under load and low latency.
    """
    try:
        return await subscription.fetch(batch=size, timeout=TOP_UP_WAIT_S)
    except TimeoutError:
        pass
    batch = await subscription.fetch(batch=1, timeout=PULL_WAIT_S)
    if size > 1:
        with contextlib.suppress(TimeoutError):
            batch += await subscription.fetch(batch=size - 1, timeout=TOP_UP_WAIT_S)
    return batch


def _groups_of(consumer: BatchConsumer[Any], settings: ServiceSettings) -> int:
    return settings.consumer_groups if consumer.partitioned_by is not None else 1


def group_durable(consumer: BatchConsumer[Any], group: int, groups: int) -> str:
    """The server-side durable of one group; a single group keeps the consumer's own name."""
    return consumer.durable if groups == 1 else f"{consumer.durable}-g{group}of{groups}"


async def _pull_loop(runtime: Runtime, consumer: BatchConsumer[Any], durable: str, stopping: asyncio.Event) -> None:
    """Fetch batches from the durable and hand each to its processor, one batch at a time (per-patient order).

    FastStream 0.7.8's batch pull loop catches `nats.errors.TimeoutError`, but nats-py 2.16 raises the builtin
    `TimeoutError` from `fetch`, which drops a partially gathered batch until its ack wait expires; this loop
    keeps the nats-py semantics as they are.
    """
    processor = runtime.processors[consumer.durable]
    subscription = await runtime.jetstream.pull_subscribe_bind(durable=durable, stream=consumer.stream)
    try:
        while not stopping.is_set():
            try:
                messages = await next_batch(subscription, runtime.settings.batch_size)
            except TimeoutError:
                continue
            except (
                nats_errors.ConnectionClosedError,
                nats_errors.ConnectionReconnectingError,
                js_errors.ServiceUnavailableError,
            ):
                await asyncio.sleep(0.5)
                continue
            except (nats_errors.Error, js_errors.Error) as exc:
                log.warning("fetch failed; retrying", consumer=consumer.durable, error_type=type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            try:
                await processor.handle(messages)
            except Exception as exc:
                log.exception("batch handling failed", consumer=consumer.durable, error_type=type(exc).__name__)
                await asyncio.sleep(0.5)
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()


def _subscribe_command(runtime: Runtime, service: str, route: CommandRoute) -> None:
    async def on_command(msg: NatsMessage) -> dict[str, Any]:
        try:
            command = route.model.model_validate_json(msg.body)
        except ValidationError as exc:
            return CommandReply(outcome="invalid", message=describe_invalid(exc)).model_dump(mode="json")
        try:
            async with runtime.db.acquire() as conn:
                if route.transactional:
                    async with conn.transaction():
                        reply = await route.handle(conn, command)
                else:
                    reply = await route.handle(conn, command)
        except Exception as exc:
            log.exception("command failed", subject=route.subject, error_type=type(exc).__name__)
            return CommandReply(outcome="error", message=f"internal error ({type(exc).__name__})").model_dump(
                mode="json"
            )
        if reply.ok:
            runtime.wake_relay()
        return reply.model_dump(mode="json")

    on_command.__name__ = "on_" + route.subject.replace(".", "_")
    runtime.broker.subscriber(route.subject, queue=service, decoder=_raw_body)(on_command)


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
    app.after_startup(_freeze_startup_heap)
    try:
        import uvloop
    except ImportError:
        asyncio.run(app.run())
        return
    uvloop.run(app.run())
