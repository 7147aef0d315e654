"""JetStream streams and durable consumers: owners declare, everyone else waits for the owner."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Literal

from nats import errors as nats_errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError, ServerError

from mtm.contracts import subjects
from mtm.platform.faults import backoff
from mtm.platform.logging import get_logger

log = get_logger(__name__)


Retention = Literal["forever", "intake", "dead-letters"]


@dataclass(frozen=True)
class StreamSpec:
    """A stream as its one owner declares it: file storage, limits retention, nothing deleted or purged."""

    name: str
    subjects: tuple[str, ...]
    owner: str
    description: str
    kept_for: Retention = "forever"
    """How long messages stay: the log for ever; raw intake and dead letters (raw PHI) for the operator's period."""
    bodies: str | None = None
    """The object store declared with the stream for its messages too large for one message (`mtm.platform.bodies`)."""

    def config(self, *, replicas: int, duplicate_window_s: float, max_age_s: float = 0.0) -> StreamConfig:
        # Expiry by age is not a purge: nobody can remove a message before its time. The log never expires.
        max_age = max_age_s if self.kept_for != "forever" else 0.0
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,
            max_msgs=-1,
            max_bytes=-1,
            max_age=max_age,
            num_replicas=replicas,
            # The server wants the deduplication window within the age limit.
            duplicate_window=min(duplicate_window_s, max_age) if max_age else duplicate_window_s,
            deny_delete=True,
            deny_purge=True,
            allow_direct=True,
        )

    def bodies_config(self, *, replicas: int) -> StreamConfig | None:
        """The stream of the object store its large messages go to: kept as long as the stream, replicated alike.

        Laid out as nats-py and the `nats` tool expect an object store (chunks and metadata subjects, rollups),
        without their default expiry. Purges stay allowed: the object store's metadata is written with rollups,
        which a stream that denies purges refuses; no service's user may purge it (`mtm.platform.access`).
        """
        if self.bodies is None:
            return None
        return StreamConfig(
            name=f"OBJ_{self.bodies}",
            description=f"Stored forms of {self.name} messages too large for one message; the log references them.",
            subjects=[f"$O.{self.bodies}.C.>", f"$O.{self.bodies}.M.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,
            max_msgs=-1,
            max_bytes=-1,
            max_age=0.0,
            num_replicas=replicas,
            allow_rollup_hdrs=True,
            deny_delete=True,
            allow_direct=True,
        )


PATIENT_EVENTS = StreamSpec(
    name=subjects.PATIENT_EVENTS_STREAM,
    subjects=(subjects.PATIENT_EVENTS_SUBJECTS,),
    owner=subjects.PATIENT_EVENTS_OWNER,
    description="Append-only patient medication event log; subjects carry the patient id.",
    bodies=subjects.PATIENT_EVENT_BODIES_BUCKET,
)
DISCHARGE_INTAKE = StreamSpec(
    name=subjects.DISCHARGE_INTAKE_STREAM,
    subjects=(subjects.DISCHARGE_INTAKE_SUBJECT,),
    owner=subjects.DISCHARGE_INTAKE_OWNER,
    description="Discharges as hospitals sent them (native contract or FHIR R4 Bundle), before validation.",
    kept_for="intake",
)
FILL_INTAKE = StreamSpec(
    name=subjects.FILL_INTAKE_STREAM,
    subjects=(subjects.FILL_INTAKE_SUBJECT,),
    owner=subjects.FILL_INTAKE_OWNER,
    description="Pharmacy fills as sent (native contract or FHIR R4 Bundle of MedicationDispense), before validation.",
    kept_for="intake",
)
PHYSICIAN_INBOX = StreamSpec(
    name=subjects.PHYSICIAN_INBOX_STREAM,
    subjects=(f"{subjects.PHYSICIAN_INBOX_PREFIX}.>",),
    owner=subjects.PHYSICIAN_INBOX_OWNER,
    description="Per-physician inbox of referral notifications.",
)


def dead_letter_stream(service: str) -> StreamSpec:
    return StreamSpec(
        name=subjects.dead_letter_stream(service),
        subjects=(f"{subjects.DEAD_LETTER_PREFIX}.{service}.>",),
        owner=service,
        description=f"Messages {service} could not process, kept with the reason.",
        kept_for="dead-letters",
    )


async def declare_stream(
    js: JetStreamContext, spec: StreamSpec, *, replicas: int, duplicate_window_s: float, max_age_s: float = 0.0
) -> None:
    """Create the stream (and its object store of large messages, if it has one), or bring an existing one to the
    owner's configuration where the owner may.

    A service's NATS user may update only the streams it owns that expire (intake, dead letters), so a retention
    set later reaches them on its next start. The log and the physicians' inboxes are kept for ever: their owner
    may create them but not update them, since an update can also shrink what a stream keeps. A changed
    configuration of those (replicas, the deduplication window) is an admin's to apply; the service then runs on
    the stream as it is and says so in its log.
    """
    config = spec.config(replicas=replicas, duplicate_window_s=duplicate_window_s, max_age_s=max_age_s)
    await _create_or_update(js, config)
    bodies = spec.bodies_config(replicas=replicas)
    if bodies is not None:
        await _create_or_update(js, bodies)


# nats-server answers a create that races the teardown of a stream deleted moments before (a test's clean-up, an
# operator re-creating a stream) with "error creating store for stream" (500, 10049), the cause only in its own log;
# the same create a moment later succeeds. Seen in CI, one run in several, on a loaded machine.
STORE_NOT_CREATED = 10049
ADD_STREAM_ATTEMPTS = 5


async def add_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """`js.add_stream`, tried again (after a back-off) while the server could not create the stream's store."""
    for attempt in range(ADD_STREAM_ATTEMPTS):
        try:
            await js.add_stream(config)
            return
        except ServerError as exc:
            if exc.err_code != STORE_NOT_CREATED or attempt == ADD_STREAM_ATTEMPTS - 1:
                raise
            log.warning("stream store not created; trying again", stream=config.name, attempt=attempt + 1)
            await asyncio.sleep(backoff(attempt))


async def _create_or_update(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await add_stream(js, config)
        log.info("stream declared", stream=config.name)
    except BadRequestError as exc:
        if exc.err_code != 10058:  # stream name already in use with a different configuration
            raise
        try:
            await js.update_stream(config)
        except (TimeoutError, nats_errors.TimeoutError):
            # A refused request gets no reply: the server drops it and reports a permissions violation.
            log.warning(
                "stream configuration differs and was not updated (an admin applies stream changes)",
                stream=config.name,
                reason_code="update-refused",
            )
            return
        log.info("stream updated", stream=config.name)


async def wait_for_stream(js: JetStreamContext, name: str, *, timeout_s: float) -> None:
    """Bind to a stream owned by another service without redeclaring it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await js.stream_info(name)
            return
        except NotFoundError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {name} was not declared by its owner within {timeout_s:.0f} s") from None
            await asyncio.sleep(0.2)


@dataclass(frozen=True)
class DurableSpec:
    """A durable pull consumer, created or updated at start so code changes reach the server."""

    stream: str
    durable: str
    filter_subjects: tuple[str, ...]
    max_deliver: int
    ack_wait_s: float
    max_ack_pending: int

    def config(self) -> ConsumerConfig:
        filters = list(self.filter_subjects)
        return ConsumerConfig(
            durable_name=self.durable,
            name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            # No server bound: a message the server stopped delivering would be lost without a trace. The service
            # parks message-caused failures at `max_deliver` and what keeps stopping it soon after; outages do not
            # count (the batch in hand is held, not redelivered).
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
            filter_subject=filters[0] if len(filters) == 1 else None,
            filter_subjects=filters if len(filters) > 1 else None,
        )


async def ensure_durable(js: JetStreamContext, spec: DurableSpec) -> None:
    await js.add_consumer(spec.stream, spec.config())


async def declare_dead_letter_bodies(
    js: JetStreamContext, service: str, *, replicas: int, max_age_s: float = 0.0
) -> None:
    """The object store that keeps dead-lettered bodies too large to travel inside their letter."""
    from nats.js.api import ObjectStoreConfig

    from mtm.contracts.dead_letter import dead_letter_bucket

    config = ObjectStoreConfig(
        bucket=dead_letter_bucket(service),
        description=f"Bodies of messages {service} parked that were too large for their dead letter.",
        storage=StorageType.FILE,
        replicas=replicas,
        ttl=max_age_s or None,
    )
    try:
        await js.create_object_store(dead_letter_bucket(service), config=config)
    except BadRequestError as exc:
        if exc.err_code != 10058:  # the bucket exists with another configuration (an earlier retention)
            raise
        stream = f"OBJ_{dead_letter_bucket(service)}"
        current = (await js.stream_info(stream)).config
        current.max_age = max_age_s
        await js.update_stream(current)
        log.info("stream updated", stream=stream)
