"""Least privilege on NATS: one user per service, tool and integrator, each allowed only the subjects it needs.

The tables below are the README's event → producer table in force: a service may append to the patient log only
the events it decides, answer only its own commands, queries and admin requests, and use the JetStream API only
for the streams it owns and the durable consumers it keeps. Patients' event keys travel on one subject
(`PATIENT_KEYS`): the key keeper (reconciliation) alone answers it, and only the other services and the web app
(whose live updates open the events they follow) may ask, never the CLI or an integrator; the keeper alone announces
the keys it makes (`PATIENT_KEYS_MADE`), and only the other services and the web app hear them. Nobody but `admin`
may delete or purge a stream, update the log or the physicians' inboxes (kept for ever), or touch another's
consumers; a service may update only its own streams that expire (intake, dead letters), so a retention set later
reaches them, and delete only a durable of its own that an earlier version left (a retiring one) once drained.
Every client's replies arrive on an inbox of its own (`_INBOX.<user>.…`), so no user can read
another's replies or pulled messages. The web app may send only the requests its pages send and follow only the
events its live updates show, and erasures (it forgets the patient's key, as the services do). Integrators (a
hospital, a pharmacy) live in accounts of their own and reach mtm's account only through the one intake subject it
exports to them.

`nats_accounts` renders the `accounts` block of a nats-server configuration with each password as a variable
(`$MTM_NATS_PASSWORD_<USER>`), taken from the server's environment; `nats_server_config` a whole configuration.
`mtm up` runs the embedded server with it, `deploy/nats/nats.conf` is it for compose
(`python -m mtm.platform.access deploy/nats/nats.conf` writes it).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mtm.contracts import (
    ActionPlanDelivered,
    ActionPlanOverdue,
    AdherenceMeasured,
    AlertOverridden,
    EventEnvelope,
    FollowUpScheduled,
    MedicationDispensed,
    MedicationsReconciled,
    MtmDisenrolled,
    MtmEligibilityDetermined,
    MtmEnrolled,
    NotificationDelivered,
    NotificationFailed,
    NotificationRequested,
    NotificationRetryScheduled,
    RecommendationOutcomeRecorded,
    ReferralAcknowledged,
    ReferralAnswered,
    ReferralEscalated,
    ReferralRequested,
    ReviewTaskClaimed,
    ReviewTaskCompleted,
    ReviewTaskCreated,
    ReviewTaskOverdue,
    ReviewTaskReassigned,
    ReviewTaskReleased,
    ScheduledReviewSkipped,
    TransitionOfCareRecorded,
)
from mtm.contracts.admin import rebuild_subject, status_subject
from mtm.contracts.dead_letter import dead_letter_bucket, dead_letters_subject
from mtm.contracts.events import PatientErased
from mtm.contracts.subjects import (
    ACKNOWLEDGE_REFERRAL,
    ANSWER_REFERRAL,
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    DEAD_LETTER_PREFIX,
    DISCHARGE_INTAKE_STREAM,
    DISCHARGE_INTAKE_SUBJECT,
    ERASE_PATIENT,
    FILL_INTAKE_STREAM,
    FILL_INTAKE_SUBJECT,
    GET_ACTION_PLAN,
    GET_MEDICATION_HISTORY,
    GET_MEDICATION_LIST,
    GET_REFERRAL,
    GET_REVIEW_RECORD,
    GET_REVIEW_TASK,
    LIST_REFERRALS,
    LIST_WORKLIST,
    OVERRIDE_ALERT,
    PATIENT_EVENT_BODIES_BUCKET,
    PATIENT_EVENT_BODIES_STREAM,
    PATIENT_EVENTS_STREAM,
    PATIENT_KEYS,
    PATIENT_KEYS_MADE,
    PATIENT_PARTITIONS,
    PHYSICIAN_INBOX_PREFIX,
    REASSIGN_REVIEW_TASK,
    RECORD_ACTION_PLAN_DELIVERY,
    RECORD_RECOMMENDATION_OUTCOME,
    RELEASE_REVIEW_TASK,
    event_filter,
)
from mtm.platform.streams import (
    DISCHARGE_INTAKE,
    FILL_INTAKE,
    PATIENT_EVENTS,
    PHYSICIAN_INBOX,
    StreamSpec,
    dead_letter_stream,
)

ADMIN = "admin"
MTM_ACCOUNT = "MTM"
JS_API = "$JS.API"
INBOX_ROOT = "_INBOX"
# How many groups of patient partitions a consumer may be split into (`MTM_CONSUMER_GROUPS`).
GROUP_COUNTS = tuple(n for n in range(2, PATIENT_PARTITIONS + 1) if PATIENT_PARTITIONS % n == 0)


def inbox_prefix(user: str | None) -> str:
    """Where a user's replies arrive; users other than admin may subscribe to their own only."""
    return f"{INBOX_ROOT}.{user}" if user else INBOX_ROOT


def group_durable_name(durable: str, group: int, groups: int) -> str:
    """The server-side durable of one group of patient partitions; a single group keeps the consumer's name."""
    return durable if groups == 1 else f"{durable}-g{group}of{groups}"


def rebuild_reader_name(service: str) -> str:
    """The consumer a rebuild reads the log with: one name per service (one rebuild at a time holds its lock)."""
    return f"{service}-rebuild"


def password_variable(user: str) -> str:
    """The environment variable the server configuration takes a user's password from.

    nats-server parses a variable's value as configuration: give the password as a quoted string (`"s3cret"`),
    or one that starts with a letter and has only letters, digits and `_`.
    """
    return "MTM_NATS_PASSWORD_" + user.upper().replace("-", "_")


@dataclass(frozen=True)
class Durable:
    """A durable consumer a service keeps; a partitioned one may be split into groups (`<name>-g<g>of<N>`)."""

    stream: str
    name: str
    partitioned: bool = True
    retiring: bool = False
    """An earlier version's durable the service only drains and deletes (`Reaction.retiring`): it may read, ack and
    delete it, never create or re-point it."""

    def names(self) -> tuple[str, ...]:
        if not self.partitioned:
            return (self.name,)
        groups = ((g, n) for n in GROUP_COUNTS for g in range(n))
        return (self.name, *(group_durable_name(self.name, g, n) for g, n in groups))


@dataclass(frozen=True)
class ServiceGrant:
    """What one service may do: the events it appends, the streams it declares, the consumers it keeps."""

    service: str
    publishes: tuple[type[EventEnvelope], ...]
    durables: tuple[Durable, ...]
    owns: tuple[StreamSpec, ...] = ()
    """Streams it declares (besides its own dead letters): create and read, never delete or purge; update only
    those that expire (a retention set later reaches them), never the ones kept for ever."""
    sends: tuple[str, ...] = ()
    """Other subjects it publishes on (notify: the physicians' inboxes)."""
    keeps_keys: bool = False
    """The key keeper: answers the patients' key requests and erasure. Every other service asks it for keys."""

    @property
    def dead_letter_stream(self) -> StreamSpec:
        return dead_letter_stream(self.service)

    @property
    def bucket_stream(self) -> str:
        return f"OBJ_{dead_letter_bucket(self.service)}"

    @property
    def answers(self) -> tuple[str, ...]:
        """Request subjects it answers: its commands and queries by the `mtm.cmd|query.<service>.…` convention,
        its status, its rebuild and an admin's requests about its dead letters."""
        name = self.service
        own = (
            f"mtm.cmd.{name}.>",
            f"mtm.query.{name}.>",
            status_subject(name),
            rebuild_subject(name),
            dead_letters_subject(name, "*"),
        )
        return (*own, PATIENT_KEYS, ERASE_PATIENT) if self.keeps_keys else own

    @property
    def redrives(self) -> tuple[str, ...]:
        """Where it may send a dead letter back besides the events it decides: the intakes it owns. An event of
        the log that another service decided goes back only by that service (no one else may append it)."""
        return tuple(subject for spec in self.owns if spec.kept_for == "intake" for subject in spec.subjects)

    def may_publish(self, subject: str) -> bool:
        """Whether the server lets this service publish a message on `subject` (a redrive of a dead letter)."""
        allowed = self.permissions()["publish"]
        assert isinstance(allowed, dict)
        return any(subject_matches(pattern, subject) for pattern in allowed["allow"])

    @property
    def requests(self) -> tuple[str, ...]:
        """Requests it sends to other services: the patients' keys, unless it keeps them."""
        return () if self.keeps_keys else (PATIENT_KEYS,)

    @property
    def announcements(self) -> tuple[str, ...]:
        """What it announces: the keeper, the keys it has just made."""
        return (PATIENT_KEYS_MADE,) if self.keeps_keys else ()

    @property
    def hears(self) -> tuple[str, ...]:
        """Announcements it listens to besides its requests: every other service, the keys the keeper made."""
        return () if self.keeps_keys else (PATIENT_KEYS_MADE,)

    def permissions(self) -> dict[str, object]:
        bucket = dead_letter_bucket(self.service)
        declared = (*self.owns, self.dead_letter_stream)
        # A stream's object store of large messages is declared with it (and, kept for ever, updated by an admin).
        streams = (
            *(spec.name for spec in declared),
            *(f"OBJ_{spec.bodies}" for spec in declared if spec.bodies is not None),
            self.bucket_stream,
        )
        # What expires may take a new retention from its owner (the dead-letter bodies expire with the letters);
        # what is kept for ever only an admin may change.
        expiring = (*(spec.name for spec in declared if spec.kept_for != "forever"), self.bucket_stream)
        publish = [
            *(event_filter(cls) for cls in self.publishes),
            *self.sends,
            *self.requests,
            *self.announcements,
            *self.redrives,
            f"{DEAD_LETTER_PREFIX}.{self.service}.>",
            f"$O.{bucket}.>",
            f"mtm.admin.{self.service}.rebuild.*.progress",
            *(f"{JS_API}.STREAM.{verb}.{stream}" for stream in streams for verb in ("CREATE", "INFO")),
            *(f"{JS_API}.STREAM.UPDATE.{stream}" for stream in expiring),
            f"{JS_API}.STREAM.INFO.{PATIENT_EVENTS_STREAM}",
            f"{JS_API}.DIRECT.GET.{PATIENT_EVENTS_STREAM}",
            # Every service appends to the patient log and reads it: events too large for one message go through
            # the log's object store.
            *event_body_reads(),
            *event_body_writes(),
            # An admin's dead-letter requests read letters and redrive records by sequence and by subject.
            f"{JS_API}.STREAM.MSG.GET.{self.dead_letter_stream.name}",
            f"{JS_API}.DIRECT.GET.{self.dead_letter_stream.name}",
            f"{JS_API}.DIRECT.GET.{self.dead_letter_stream.name}.>",
            # The object store reads an object's metadata before it replaces it, and purges the replaced chunks;
            # it reads an object's chunks with an ordered consumer (found by subject, with flow control).
            f"{JS_API}.DIRECT.GET.{self.bucket_stream}",
            f"{JS_API}.DIRECT.GET.{self.bucket_stream}.>",
            f"{JS_API}.STREAM.MSG.GET.{self.bucket_stream}",
            f"{JS_API}.STREAM.PURGE.{self.bucket_stream}",
            f"{JS_API}.STREAM.NAMES",
            *(f"{JS_API}.CONSUMER.{verb}.{self.bucket_stream}" for verb in ("CREATE",)),
            *(f"{JS_API}.CONSUMER.{verb}.{self.bucket_stream}.>" for verb in ("CREATE", "INFO", "DELETE")),
            f"$JS.FC.{self.bucket_stream}.>",
        ]
        for durable in self.durables:
            for name in durable.names():
                publish += _consumer_subjects(durable.stream, name, create=not durable.retiring)
                if durable.retiring:
                    publish.append(f"{JS_API}.CONSUMER.DELETE.{durable.stream}.{name}")
        reader = rebuild_reader_name(self.service)
        publish += [
            *_consumer_subjects(PATIENT_EVENTS_STREAM, reader, acks=False),
            f"{JS_API}.CONSUMER.DELETE.{PATIENT_EVENTS_STREAM}.{reader}",
        ]
        return {
            "publish": {"allow": _unique(publish)},
            "subscribe": {"allow": [f"{inbox_prefix(self.service)}.>", *self.answers, *self.hears]},
            "allow_responses": True,
        }


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a NATS permission subject (`*` one token, `>` the rest) covers `subject`, itself possibly a
    wildcard subscription (covered only by a pattern at least as wide)."""
    wanted, given = pattern.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(given) > i
        if i >= len(given) or given[i] == ">" or (token != "*" and token != given[i]):
            return False
    return len(given) == len(wanted)


def event_body_reads() -> tuple[str, ...]:
    """What reading an event kept in the patient log's object store takes (`mtm.platform.bodies`): the object's
    metadata and chunks by direct get. Readers of the patient log have it; nobody else reads the bucket."""
    return (
        f"{JS_API}.DIRECT.GET.{PATIENT_EVENT_BODIES_STREAM}",
        f"{JS_API}.DIRECT.GET.{PATIENT_EVENT_BODIES_STREAM}.>",
    )


def event_body_writes() -> tuple[str, ...]:
    """What storing one takes besides reading: nats-py's object store binds to the bucket, reads the object's
    metadata before it writes, and publishes chunks and metadata. Writers of the patient log have it."""
    return (
        f"$O.{PATIENT_EVENT_BODIES_BUCKET}.>",
        f"{JS_API}.STREAM.INFO.{PATIENT_EVENT_BODIES_STREAM}",
        f"{JS_API}.STREAM.MSG.GET.{PATIENT_EVENT_BODIES_STREAM}",
    )


def _consumer_subjects(stream: str, name: str, *, acks: bool = True, create: bool = True) -> list[str]:
    api = f"{JS_API}.CONSUMER"
    found = [
        *((f"{api}.CREATE.{stream}.{name}", f"{api}.CREATE.{stream}.{name}.>") if create else ()),
        f"{api}.INFO.{stream}.{name}",
        f"{api}.MSG.NEXT.{stream}.{name}",
    ]
    return [*found, f"$JS.ACK.{stream}.{name}.>"] if acks else found


@dataclass(frozen=True)
class ToolGrant:
    """A client people use (the CLI, the web app): sends commands and queries, watches the log."""

    name: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    reads_events: bool = False
    """Opens the events it follows (the web app): it may also read those kept in the log's object store."""

    def permissions(self) -> dict[str, object]:
        return {
            "publish": {"allow": [*self.publish, *(event_body_reads() if self.reads_events else ())]},
            "subscribe": {"allow": [f"{inbox_prefix(self.name)}.>", *self.subscribe]},
        }


@dataclass(frozen=True)
class Integrator:
    """A hospital or pharmacy system: an account of its own, publishing on one intake subject and nothing else."""

    name: str
    intake: str

    @property
    def account(self) -> str:
        return self.name.upper().replace("-", "_")

    def permissions(self) -> dict[str, object]:
        # Its own account holds nobody else's traffic, so the usual inbox is its alone.
        return {"publish": {"allow": [self.intake]}, "subscribe": {"allow": [f"{INBOX_ROOT}.>"]}}


def _log(*names: str) -> tuple[Durable, ...]:
    """Durable consumers of the patient log (partitioned: each may be split into groups)."""
    return tuple(Durable(PATIENT_EVENTS_STREAM, name) for name in names)


SERVICE_GRANTS: tuple[ServiceGrant, ...] = (
    ServiceGrant(
        "reconciliation",
        # PatientErased: an admin's erasure, decided by the key keeper, which destroys the key first.
        publishes=(TransitionOfCareRecorded, MedicationsReconciled, MedicationDispensed, PatientErased),
        owns=(PATIENT_EVENTS, DISCHARGE_INTAKE, FILL_INTAKE),
        durables=(
            Durable(DISCHARGE_INTAKE_STREAM, "reconciliation-discharge-intake", partitioned=False),
            Durable(FILL_INTAKE_STREAM, "reconciliation-fill-intake", partitioned=False),
            *_log("reconciliation-projection"),
            # The reader of its own discharges up to the version that reconciled them in the intake: drained on
            # upgrade, then deleted.
            Durable(PATIENT_EVENTS_STREAM, "reconciliation-transition-of-care", retiring=True),
        ),
        keeps_keys=True,
    ),
    ServiceGrant(
        "review",
        publishes=(
            ReviewTaskCreated,
            ReviewTaskClaimed,
            ReviewTaskReleased,
            ReviewTaskReassigned,
            ReviewTaskOverdue,
            ReviewTaskCompleted,
            ScheduledReviewSkipped,
            FollowUpScheduled,
            AlertOverridden,
            RecommendationOutcomeRecorded,
            ActionPlanDelivered,
            ActionPlanOverdue,
        ),
        durables=_log(
            "review-medications-reconciled",
            "review-fills",
            "review-mtm-program",
            "review-referrals",
            "review-projection",
        ),
    ),
    ServiceGrant(
        "referral",
        publishes=(ReferralRequested, ReferralAnswered, ReferralAcknowledged, ReferralEscalated),
        durables=_log("referral-review-task-completed", "referral-notification-failed", "referral-projection"),
    ),
    ServiceGrant(
        "notify",
        publishes=(NotificationRequested, NotificationRetryScheduled, NotificationDelivered, NotificationFailed),
        owns=(PHYSICIAN_INBOX,),
        durables=_log("notify-referral-requested", "notify-referral-escalated", "notify-projection"),
        sends=(f"{PHYSICIAN_INBOX_PREFIX}.>",),
    ),
    ServiceGrant(
        "program",
        publishes=(MtmEligibilityDetermined, MtmEnrolled, MtmDisenrolled, AdherenceMeasured),
        durables=_log("program-inputs", "program-activity", "program-projection"),
    ),
)

WEB_REQUESTS: tuple[str, ...] = (
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    RELEASE_REVIEW_TASK,
    REASSIGN_REVIEW_TASK,
    OVERRIDE_ALERT,
    RECORD_RECOMMENDATION_OUTCOME,
    RECORD_ACTION_PLAN_DELIVERY,
    GET_REVIEW_RECORD,
    GET_ACTION_PLAN,
    LIST_WORKLIST,
    GET_REVIEW_TASK,
    GET_MEDICATION_LIST,
    GET_MEDICATION_HISTORY,
    LIST_REFERRALS,
    GET_REFERRAL,
    ANSWER_REFERRAL,
    ACKNOWLEDGE_REFERRAL,
)
"""What the web app's pages send (`tests/platform/test_access_table.py` checks it against `mtm.web`)."""
WEB_FOLLOWS: tuple[type[EventEnvelope], ...] = (
    ReviewTaskCreated,
    ReviewTaskClaimed,
    ReviewTaskCompleted,
    ReviewTaskReleased,
    ReviewTaskReassigned,
    ReferralRequested,
    ReferralAcknowledged,
    ReferralAnswered,
    ReferralEscalated,
    NotificationFailed,
)
"""The events its live updates follow (`mtm.web.live.WATCHED`): it opens them with the patient's key, which it
asks the key keeper for or hears announced like a service, then asks the services for what changed. It also hears
`PatientErased` (in the clear: the patient id and the reason), to forget the patient's key as the services do."""

TOOL_GRANTS: tuple[ToolGrant, ...] = (
    # The mtm command: a pharmacist's and physician's tool (any command or query: the services check the actor's
    # role), the local stack's operator (status, rebuilds, dead letters, erasure as an admin), and for the demo and
    # replays a hospital and a pharmacy on the intakes. It watches for opened review tasks (the demo: envelopes
    # only, it holds no key) and rebuild progress.
    ToolGrant(
        "cli",
        publish=(
            "mtm.cmd.>",
            "mtm.query.>",
            status_subject("*"),
            rebuild_subject("*"),
            dead_letters_subject("*", "*"),
            ERASE_PATIENT,
            DISCHARGE_INTAKE_SUBJECT,
            FILL_INTAKE_SUBJECT,
        ),
        subscribe=(event_filter(ReviewTaskCreated), "mtm.admin.*.rebuild.*.progress"),
    ),
    # The web app: the requests its pages send as the person signed in, the events its live updates follow and
    # the keys to open them, asked for or announced by the keeper (it shows those patients to the people signed in
    # anyway; it cannot answer key requests nor announce a key), and erasures, on which it forgets a patient's key.
    ToolGrant(
        "web",
        publish=(*WEB_REQUESTS, PATIENT_KEYS),
        subscribe=(*(event_filter(cls) for cls in WEB_FOLLOWS), event_filter(PatientErased), PATIENT_KEYS_MADE),
        reads_events=True,
    ),
)

# One line per integrator: its name (user and account) and the one intake subject it may publish on.
INTEGRATORS: tuple[Integrator, ...] = (
    Integrator("hospital", DISCHARGE_INTAKE_SUBJECT),
    Integrator("pharmacy", FILL_INTAKE_SUBJECT),
)


@dataclass(frozen=True)
class AccessTable:
    """Everyone who may connect, and what each may do."""

    services: tuple[ServiceGrant, ...] = SERVICE_GRANTS
    tools: tuple[ToolGrant, ...] = TOOL_GRANTS
    integrators: tuple[Integrator, ...] = INTEGRATORS
    admins: tuple[str, ...] = field(default=(ADMIN,))

    def users(self) -> tuple[str, ...]:
        return (
            *(g.service for g in self.services),
            *(t.name for t in self.tools),
            *(i.name for i in self.integrators),
            *self.admins,
        )

    def service(self, name: str) -> ServiceGrant:
        return next(g for g in self.services if g.service == name)


ACCESS = AccessTable()


def _user(name: str, permissions: dict[str, object] | None) -> dict[str, object]:
    entry: dict[str, object] = {"user": name, "password": f"${password_variable(name)}"}
    if permissions is not None:
        entry["permissions"] = permissions
    return entry


def nats_accounts(table: AccessTable = ACCESS) -> str:
    """The `accounts` block: mtm's account (services, tools, admins) and one account per integrator."""
    mtm_users = [
        *(_user(g.service, g.permissions()) for g in table.services),
        *(_user(t.name, t.permissions()) for t in table.tools),
        *(_user(name, None) for name in table.admins),
    ]
    accounts: dict[str, object] = {
        MTM_ACCOUNT: {
            "jetstream": "enabled",
            "users": mtm_users,
            "exports": [{"service": i.intake, "accounts": [i.account]} for i in table.integrators],
        }
    }
    for integrator in table.integrators:
        accounts[integrator.account] = {
            "users": [_user(integrator.name, integrator.permissions())],
            "imports": [{"service": {"account": MTM_ACCOUNT, "subject": integrator.intake}}],
        }
    return "accounts " + _render(accounts)


def _render(value: object, indent: int = 0) -> str:
    """NATS configuration syntax: maps and lists; strings quoted, except `$VARIABLE` references and `enabled`."""
    pad = "  " * (indent + 1)
    if isinstance(value, dict):
        body = "".join(f"{pad}{key}: {_render(item, indent + 1)}\n" for key, item in value.items())
        return "{\n" + body + "  " * indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        body = "".join(f"{pad}{_render(item, indent + 1)}\n" for item in value)
        return "[\n" + body + "  " * indent + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and (value == "enabled" or (value.startswith("$") and value[1:].isidentifier())):
        return value
    return json.dumps(value)


@dataclass(frozen=True)
class ServerTLS:
    cert_file: str
    key_file: str
    ca_file: str | None = None
    verify: bool = False
    """Require client certificates signed by `ca_file` (mutual TLS) besides the passwords."""


def nats_server_config(
    *,
    host: str,
    port: int,
    server_name: str,
    store_dir: str,
    tls: ServerTLS | None,
    table: AccessTable = ACCESS,
) -> str:
    """A whole nats-server configuration: JetStream, TLS for every client when given, the accounts."""
    lines = [
        "# Generated by mtm (mtm.platform.access); passwords come from the environment ($MTM_NATS_PASSWORD_<USER>).",
        f"host: {json.dumps(host)}",
        f"port: {port}",
        f"server_name: {json.dumps(server_name)}",
        f"jetstream {{ store_dir: {json.dumps(store_dir)} }}",
    ]
    if tls is not None:
        block: dict[str, object] = {"cert_file": tls.cert_file, "key_file": tls.key_file, "timeout": 5}
        if tls.ca_file is not None:
            block["ca_file"] = tls.ca_file
        if tls.verify:
            block["verify"] = True
        lines.append("tls " + _render(block))
    lines.append(nats_accounts(table))
    return "\n".join(lines) + "\n"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def compose_nats_config() -> str:
    """The compose deployment's configuration (`deploy/nats/nats.conf`): container paths, the certificate and key
    mounted at /etc/mtm/tls, every password from the container's environment."""
    return nats_server_config(
        host="0.0.0.0",
        port=4222,
        server_name="mtm-nats-1",
        store_dir="/data",
        tls=ServerTLS(cert_file="/etc/mtm/tls/nats.pem", key_file="/etc/mtm/tls/nats.key"),
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m mtm.platform.access [FILE]`: write (or print) the compose deployment's NATS configuration."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        Path(args[0]).write_text(compose_nats_config())
    else:
        sys.stdout.write(compose_nats_config())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
