"""R1 to R3: the clinical flow through kill -9 of services, the loss of a NATS stream leader, Postgres and NATS outages.

Each scenario starts a stack of its own (`faults.stack`), runs the clinic on it (`faults.clinic`) while the fault
happens, lets it settle, and reads back what happened (`faults.audit`). Figures are counts with what they were
counted on; the few timings are reported, never required by the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from support.processes import SERVICES
from support.webhook import WebhookReceiver

from faults.audit import Audit, audit, read_stream
from faults.clinic import TOOLS, Clinic, ClinicPlan
from faults.report import Figure, Result, must_be_zero, reported, within
from faults.stack import WEBHOOK_SECRET, Stack, lagging_replicas, webhook_receiver
from mtm.contracts import ReviewTaskCreated
from mtm.contracts.subjects import DISCHARGE_INTAKE_STREAM, PATIENT_EVENTS_STREAM, event_filter, patient_of_subject

Say = Callable[[str], None]
SETTLE_TIMEOUT_S = 300.0
BACKGROUND_FAILED = "background task failed"


@dataclass(frozen=True)
class KillPlan:
    discharges: int
    every_s: tuple[float, float] = (2.0, 6.0)
    rate_per_s: float | None = None
    stall_s: float = 240.0
    seed: int = 11


@dataclass(frozen=True)
class LeaderPlan:
    """Kills spread evenly over the hospital's sending, so discharges are still being sent after each (the
    resumption is measured on them): `discharges / rate_per_s` must leave room for the rejoins."""

    discharges: int
    rate_per_s: float = 15.0
    leader_kills: int = 2
    rejoin_after_s: float = 20.0
    stall_s: float = 240.0


@dataclass(frozen=True)
class OutagePlan:
    discharges: int
    rate_per_s: float = 15.0
    postgres_down_s: float = 15.0
    postgres_outages: int = 2
    nats_restarts: int = 2
    stall_s: float = 240.0


def webhook_env(receiver: WebhookReceiver) -> dict[str, str]:
    return {"MTM_NOTIFY_WEBHOOK_URL": receiver.url, "MTM_NOTIFY_WEBHOOK_SECRET": WEBHOOK_SECRET}


@contextlib.asynccontextmanager
async def clinic_on_stack(
    work_dir: Path, plan: ClinicPlan, *, nats_nodes: int = 1
) -> AsyncIterator[tuple[Stack, Clinic, WebhookReceiver]]:
    """A stack of its own with a webhook receiver, the services ready, and the clinic's tools reading."""
    with webhook_receiver() as receiver:
        stack = Stack(work_dir, nats_nodes=nats_nodes, extra_env=webhook_env(receiver))
        clinic: Clinic | None = None
        try:
            await stack.start()
            clinic = await Clinic(stack.connect, plan).start()
            yield stack, clinic, receiver
        finally:
            if clinic is not None:
                await clinic.close()
            await stack.stop()


async def settle_and_audit(
    stack: Stack, clinic: Clinic, receiver: WebhookReceiver, result: Result, others: Iterable[str] = ()
) -> Audit:
    """Let every service finish what it holds, then read back what happened to every acknowledged discharge."""
    moving = await stack.settle(timeout_s=SETTLE_TIMEOUT_S)
    result.details["still_moving_after_settle"] = moving
    nc = await stack.connect("faults-audit")
    try:
        found = await audit(nc, clinic.sent, receiver, others)
    finally:
        await nc.close()
    result.details["audit"] = found.summary()
    result.details["tools"] = {
        "replies": dict(clinic.stats.replies),
        "retries": dict(clinic.stats.retries),
        "failures": clinic.stats.failures[:20],
        "unreadable": clinic.stats.unreadable,
    }
    return found


def flow_figures(prefix: str, found: Audit, clinic: Clinic, *, dead_letters_expected: bool = False) -> list[Figure]:
    """Lost, doubled and duplicate notifications, each with what it was counted on."""
    referrals = len(found.referrals)
    figures = [
        reported(f"{prefix}_discharges", "discharges acknowledged by the intake", len(clinic.sent)),
        reported(f"{prefix}_log_events", "events on the patient log", found.log_messages),
        must_be_zero(f"{prefix}_lost", "events lost", found.lost, found.expected_events, "expected events"),
        must_be_zero(f"{prefix}_doubled", "events doubled", found.doubled, found.expected_events, "expected events"),
        must_be_zero(
            f"{prefix}_notifications_lost",
            "notifications never received (webhook, inbox)",
            found.lost_notifications,
            2 * referrals,
            "notifications",
        ),
        must_be_zero(
            f"{prefix}_duplicate_notifications",
            "duplicate notifications by key (webhook-id, inbox msg id)",
            found.duplicate_notifications,
            2 * referrals,
            "notifications",
        ),
        reported(
            f"{prefix}_webhook_resent_same_key",
            "webhook re-sends with the same webhook-id (receiver dedups)",
            found.notifications()["webhook"]["resent_same_key"],
            count=referrals,
            of="webhooks",
        ),
    ]
    if not dead_letters_expected:
        figures.append(
            must_be_zero(
                f"{prefix}_dead_letters",
                "messages dead-lettered",
                sum(found.dead_letters.values()),
                found.log_messages,
                "log events",
            )
        )
    return figures


async def health_figures(prefix: str, stack: Stack, clinic: Clinic, *, restarts_allowed: bool = True) -> list[Figure]:
    """After the run: every service ready, every outbox delivered, the tools never stuck."""
    not_ready = await stack.not_ready()
    outbox = await stack.outbox_rows()
    restarts = sum(stack.log_lines(BACKGROUND_FAILED).values())
    label = "background task restarts (logged)"
    return [
        must_be_zero(
            f"{prefix}_services_not_ready", "services not ready at the end", len(not_ready), len(SERVICES), "services"
        ),
        must_be_zero(
            f"{prefix}_outbox_rows", "outbox rows left undelivered", sum(outbox.values()), len(SERVICES), "relays"
        ),
        reported(f"{prefix}_background_restarts", label, restarts)
        if restarts_allowed
        else must_be_zero(f"{prefix}_background_restarts", label, restarts, None, ""),
        must_be_zero(
            f"{prefix}_tool_failures",
            "commands refused unexpectedly",
            len(clinic.stats.failures),
            sum(clinic.stats.replies.values()),
            "replies",
        ),
    ]


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, unless told to stop first (True then)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def drive(
    clinic: Clinic, count: int, fault: Callable[[asyncio.Event], Awaitable[Any]], *, stall_s: float, say: Say
) -> bool:
    """Send `count` discharges while `fault` runs (until told to stop); True when every discharge was answered."""
    stop = asyncio.Event()
    faulting = asyncio.ensure_future(fault(stop))
    sending = asyncio.ensure_future(clinic.send_discharges(count))

    def check() -> None:
        if faulting.done() and not faulting.cancelled() and faulting.exception() is not None:
            raise faulting.exception()  # type: ignore[misc]

    try:
        last = time.monotonic()
        while not sending.done():
            await asyncio.wait({sending, faulting}, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
            check()
            if time.monotonic() - last > 15:
                last = time.monotonic()
                say(clinic.progress())
        sending.result()
        done = await clinic.wait_done(stall_s=stall_s, check=check, say=say)
        stop.set()
        await faulting
        return done
    finally:
        for task in (sending, faulting):
            task.cancel()
        await asyncio.gather(sending, faulting, return_exceptions=True)


# --- R1: kill -9 of random services ----------------------------------------------------------------------


async def killing(stack: Stack, plan: KillPlan, kills: Counter[str], say: Say, stop: asyncio.Event) -> None:
    """Every few seconds, kill -9 a random service and start it again at once, until told to stop."""
    assert stack.services is not None
    rng = random.Random(plan.seed)
    while not await pause(stop, rng.uniform(*plan.every_s)):
        victim = rng.choice(SERVICES)
        await asyncio.to_thread(stack.services.kill, victim)
        stack.services.start(victim)
        kills[victim] += 1
        if sum(kills.values()) % 10 == 0:
            say(f"{sum(kills.values())} kills so far")


async def r1_kills(plan: KillPlan, work_dir: Path, say: Say) -> Result:
    result = Result("R1", f"kill -9 of random services during {plan.discharges:,} discharges")
    kills: Counter[str] = Counter()
    clinic_plan = ClinicPlan(discharges=plan.discharges, rate_per_s=plan.rate_per_s)
    async with clinic_on_stack(work_dir, clinic_plan) as (stack, clinic, receiver):
        done = await drive(
            clinic, plan.discharges, partial(killing, stack, plan, kills, say), stall_s=plan.stall_s, say=say
        )
        await stack.wait_ready()
        found = await settle_and_audit(stack, clinic, receiver, result)
        result.details["kills"] = dict(kills)
        result.add(
            reported("r1_kills", "services killed with SIGKILL (and restarted)", sum(kills.values())),
            must_be_zero(
                "r1_unanswered",
                "discharges not answered by their physician",
                len(clinic.sent) - len(clinic.stats.answered & clinic.stats.tasks_seen.keys()),
                len(clinic.sent),
                "discharges",
            ),
            *flow_figures("r1", found, clinic),
            *await health_figures("r1", stack, clinic),
        )
        result.details["done"] = done
    return result


# --- R2: the stream leader of a 3-node NATS cluster killed ------------------------------------------------


@dataclass
class LeaderLoss:
    leader: str
    acknowledged_before: int
    """The last sequence of the patient log the cluster had acknowledged when its leader was killed."""
    intake_acknowledged_before: int
    election_s: float | None = None
    resumed_s: float | None = None
    """From the kill to the first review task of a discharge sent after it (the whole flow moving again)."""
    caught_up_s: float | None = None
    """From the killed node's restart until every stream's replicas were current again."""


class TaskWatch:
    """A pharmacist's tool on the surviving nodes: when each patient's review task went by (core subscription, as
    the web app's live updates follow them)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self._sub: Any = None

    async def start(self, nc: Any) -> TaskWatch:
        async def on_task(msg: Any) -> None:
            patient = patient_of_subject(msg.subject)  # the data is sealed; the subject names the patient
            self.seen.setdefault(patient, time.monotonic())

        self._sub = await nc.subscribe(
            event_filter(ReviewTaskCreated), cb=on_task, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        return self

    def first_after(self, clinic: Clinic, since: float) -> float | None:
        """When the first task arrived whose discharge the hospital first sent after `since`."""
        times = [
            at
            for patient, at in self.seen.items()
            if clinic.sent.get(patient) and clinic.sent[patient].first_sent >= since
        ]
        return min(times) if times else None


async def wait_sent(clinic: Clinic, count: int, stop: asyncio.Event) -> bool:
    """Until the hospital has sent `count` discharges (False when told to stop first)."""
    while len(clinic.sent) < count:
        if await pause(stop, 0.1):
            return False
    return True


async def killing_leaders(
    stack: Stack, clinic: Clinic, plan: LeaderPlan, losses: list[LeaderLoss], say: Say, stop: asyncio.Event
) -> None:
    assert stack.cluster is not None
    cluster = stack.cluster
    for k in range(plan.leader_kills):
        if not await wait_sent(clinic, plan.discharges * (k + 1) // (plan.leader_kills + 1), stop):
            return
        probe = await stack.connect("faults-leader-probe")
        try:
            info = await probe.jetstream().stream_info(PATIENT_EVENTS_STREAM)
            intake = await probe.jetstream().stream_info(DISCHARGE_INTAKE_STREAM)
        finally:
            await probe.close()
        leader = info.cluster.leader if info.cluster else None
        assert leader is not None, "the patient log has no leader"
        survivors = stack.node_urls(leaving_out=leader)
        watcher = await stack.connect("faults-watch", user=TOOLS, servers=survivors)
        election = await stack.connect("faults-election", servers=survivors)
        try:
            watch = await TaskWatch().start(watcher)
            loss = LeaderLoss(leader, info.state.last_seq, intake.state.last_seq)
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.kill, leader)
            say(f"killed {leader}, the patient log's leader, at sequence {loss.acknowledged_before:,}")
            losses.append(loss)
            js = election.jetstream(timeout=1.0)
            while loss.election_s is None or loss.resumed_s is None:
                if loss.election_s is None:
                    with contextlib.suppress(Exception):
                        now = await js.stream_info(PATIENT_EVENTS_STREAM)
                        if now.cluster and now.cluster.leader and now.cluster.leader != leader:
                            loss.election_s = round(time.monotonic() - killed_at, 2)
                first = watch.first_after(clinic, killed_at)
                if first is not None:
                    loss.resumed_s = round(first - killed_at, 2)
                if time.monotonic() - killed_at > plan.stall_s:
                    break
                await asyncio.sleep(0.05)
            say(f"new leader after {loss.election_s} s; flow resumed after {loss.resumed_s} s")
        finally:
            await watcher.close()
            await election.close()
        await pause(stop, plan.rejoin_after_s)
        await asyncio.to_thread(cluster.start_node, leader)
        await cluster.wait_until_ready()
        loss.caught_up_s = await caught_up(stack, plan.stall_s)
        say(f"{leader} rejoined and caught up in {loss.caught_up_s} s")


async def caught_up(stack: Stack, timeout_s: float) -> float | None:
    """Seconds until no stream has a replica behind (None: still behind after `timeout_s`)."""
    started = time.monotonic()
    nc = await stack.connect("faults-catch-up")
    try:
        while time.monotonic() - started < timeout_s:
            with contextlib.suppress(Exception):
                if not await lagging_replicas(nc.jetstream(timeout=2.0)):
                    return round(time.monotonic() - started, 2)
            await asyncio.sleep(0.2)
        return None
    finally:
        await nc.close()


async def acknowledged_kept(stack: Stack, stream: str, before: int) -> int:
    """How many of the messages the stream had acknowledged up to sequence `before` it still holds."""
    nc = await stack.connect("faults-acked")
    try:
        kept = 0
        async for stored in read_stream(nc, stream):
            if stored.seq > before:
                break
            kept += 1
        return kept
    finally:
        await nc.close()


async def r2_leader(plan: LeaderPlan, work_dir: Path, say: Say) -> Result:
    result = Result("R2", f"stream leader of a 3-node NATS cluster killed, {plan.discharges:,} discharges")
    losses: list[LeaderLoss] = []
    clinic_plan = ClinicPlan(discharges=plan.discharges, rate_per_s=plan.rate_per_s)
    async with clinic_on_stack(work_dir, clinic_plan, nats_nodes=3) as (stack, clinic, receiver):
        fault = partial(killing_leaders, stack, clinic, plan, losses, say)
        done = await drive(clinic, plan.discharges, fault, stall_s=plan.stall_s, say=say)
        found = await settle_and_audit(stack, clinic, receiver, result)
        acked = max((loss.acknowledged_before for loss in losses), default=0)
        intake_acked = max((loss.intake_acknowledged_before for loss in losses), default=0)
        kept = await acknowledged_kept(stack, PATIENT_EVENTS_STREAM, acked)
        intake_kept = await acknowledged_kept(stack, DISCHARGE_INTAKE_STREAM, intake_acked)
        result.details["leader_losses"] = [loss.__dict__ for loss in losses]
        result.details["done"] = done
        resumed = [loss.resumed_s for loss in losses]
        elections = [loss.election_s for loss in losses]
        result.add(
            reported("r2_leader_kills", "stream leaders killed with SIGKILL", len(losses)),
            must_be_zero(
                "r2_acknowledged_lost",
                "acknowledged events lost (log and intake)",
                (acked - kept) + (intake_acked - intake_kept),
                acked + intake_acked,
                "acknowledged before a kill",
            ),
            reported(
                "r2_election_s",
                "new stream leader elected after (slowest)",
                max((e for e in elections if e is not None), default=float("nan")),
                count=len(losses),
                of="kills",
                unit="s",
            ),
            within(
                "r2_resumed_s",
                "flow resumed after (slowest; kill → first task of a later discharge)",
                max((r if r is not None else float("inf")) for r in resumed) if resumed else float("inf"),
                10.0,
                count=len(losses),
                of="kills",
            ),
            must_be_zero(
                "r2_not_resumed",
                "kills after which no later discharge became a task",
                sum(1 for r in resumed if r is None),
                len(losses),
                "kills",
            ),
            *flow_figures("r2", found, clinic),
            *await health_figures("r2", stack, clinic),
        )
    return result


# --- R3: Postgres stopped, NATS restarted -------------------------------------------------------------------


async def outages(
    stack: Stack, clinic: Clinic, plan: OutagePlan, done: list[dict[str, Any]], say: Say, stop: asyncio.Event
) -> None:
    """Postgres stopped for a while and NATS restarted, alternately, spread over the run."""
    assert stack.postgres is not None and stack.nats_server is not None
    kinds = ["postgres"] * plan.postgres_outages + ["nats"] * plan.nats_restarts
    schedule = [kinds[i // 2 + (len(kinds) // 2 if i % 2 else 0)] for i in range(len(kinds))]
    for n, kind in enumerate(schedule):
        if not await wait_sent(clinic, plan.discharges * (n + 1) // (len(schedule) + 1), stop):
            return
        started = time.monotonic()
        if kind == "postgres":
            await asyncio.to_thread(stack.postgres.stop)
            say(f"Postgres stopped for {plan.postgres_down_s:.0f} s")
            await asyncio.sleep(plan.postgres_down_s)
            await asyncio.to_thread(stack.postgres.start)
        else:
            await asyncio.to_thread(stack.nats_server.stop)
            say("NATS stopped; starting it again")
            await asyncio.to_thread(stack.nats_server.start)
        done.append({"kind": kind, "down_s": round(time.monotonic() - started, 1), "sent_before": len(clinic.sent)})
        say(f"{kind} back after {done[-1]['down_s']} s")


async def r3_outages(plan: OutagePlan, work_dir: Path, say: Say) -> Result:
    title = (
        f"Postgres stopped {plan.postgres_down_s:.0f} s {plan.postgres_outages} times, "
        f"NATS restarted {plan.nats_restarts} times, {plan.discharges:,} discharges"
    )
    result = Result("R3", title)
    happened: list[dict[str, Any]] = []
    clinic_plan = ClinicPlan(discharges=plan.discharges, rate_per_s=plan.rate_per_s)
    async with clinic_on_stack(work_dir, clinic_plan) as (stack, clinic, receiver):
        pids = stack.pids()
        done = await drive(
            clinic, plan.discharges, partial(outages, stack, clinic, plan, happened, say), stall_s=plan.stall_s, say=say
        )
        found = await settle_and_audit(stack, clinic, receiver, result)
        exited = [name for name in SERVICES if not stack.services.alive(name) or stack.pids()[name] != pids[name]]  # type: ignore[union-attr]
        result.details["outages"] = happened
        result.details["done"] = done
        postgres = [o for o in happened if o["kind"] == "postgres"]
        restarts = [o for o in happened if o["kind"] == "nats"]
        result.add(
            reported("r3_postgres_outages", "Postgres outages", len(postgres), count=plan.postgres_down_s, of="s each"),
            reported("r3_nats_restarts", "NATS restarts", len(restarts)),
            must_be_zero("r3_service_exits", "service processes that exited", len(exited), len(SERVICES), "services"),
            *flow_figures("r3", found, clinic),
            *await health_figures("r3", stack, clinic),
        )
    return result
