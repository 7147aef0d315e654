"""Least privilege, proven on the secured stack's real servers: each thing a user may not do is refused.

The embedded NATS runs the access table's users (`mtm.platform.access`), TLS only; the embedded Postgres takes TLS
and SCRAM passwords only, and each service's role owns only its databases. Every refusal is checked beside the
same action done by someone who may do it, so a test cannot pass because nothing works at all.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import nats
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig
from pydantic import SecretStr
from support import actors
from support.events import new_patient_id, review_task_completed
from support.jetstream import stream_messages, wait_for
from support.services import native_discharge, native_fill
from support.webhook import WebhookReceiver, serve

from mtm.contracts import (
    CommandReply,
    DeadLetter,
    MedicationsReconciled,
    ReferralRequested,
    ReviewTaskCompleted,
    ReviewTaskCreated,
    TransitionOfCareRecorded,
)
from mtm.contracts.admin import ErasePatient, GetPatientKeys, rebuild_subject
from mtm.contracts.dead_letter import (
    GetDeadLetter,
    ListDeadLetters,
    RedriveDeadLetter,
    dead_letter_bucket,
    dead_letters_subject,
)
from mtm.contracts.events import PatientErased
from mtm.contracts.subjects import (
    DISCHARGE_INTAKE_STREAM,
    DISCHARGE_INTAKE_SUBJECT,
    DISENROLL_MEMBER,
    ERASE_PATIENT,
    FILL_INTAKE_STREAM,
    FILL_INTAKE_SUBJECT,
    LIST_ALERT_RULE_STATS,
    LIST_WORKLIST,
    PATIENT_EVENTS_PREFIX,
    PATIENT_EVENTS_STREAM,
    PATIENT_KEYS,
    PATIENT_KEYS_MADE,
    dead_letter_stream,
    event_filter,
    event_subject,
    patient_subject,
)
from mtm.devstack.embedded import EmbeddedNats
from mtm.devstack.infra import Infrastructure, resolve_infrastructure
from mtm.devstack.security import LocalSecurity
from mtm.devstack.tls import LocalCA
from mtm.platform.access import ACCESS
from mtm.platform.keys import announced_keys, nats_key_source
from mtm.platform.settings import ServiceSettings
from mtm.platform.streams import DISCHARGE_INTAKE, FILL_INTAKE, PATIENT_EVENTS, declare_stream
from mtm.platform.streams import dead_letter_stream as dead_letter_spec

pytestmark = pytest.mark.integration
# A refused publish gets no reply (the server drops it and tells the client): this long shows it got none.
REFUSED_WITHIN_S = 1.0
WEBHOOK_SECRET = "test-secret-not-for-production"


@pytest.fixture(scope="module")
def secured(infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infrastructure]:
    """The tests' servers when they are the secured embedded ones, else secured servers of this module's own."""
    if infra.secured:
        yield infra
        return
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MTM_NATS_URL", raising=False)
        env.delenv("MTM_DATABASE_URL", raising=False)
        private = resolve_infrastructure(tmp_path_factory.mktemp("secured"), use_containers=False)
    try:
        yield private
    finally:
        private.stop()


class Connection:
    """A connection as one user that keeps what the server said it refused."""

    def __init__(self, nc: Client, refusals: list[str]) -> None:
        self.nc = nc
        self.refusals = refusals

    @classmethod
    async def open(cls, servers: Infrastructure, user: str) -> Connection:
        refusals: list[str] = []

        async def on_error(exc: Exception) -> None:
            refusals.append(str(exc))

        nc = await servers.nats_client(user).connect(error_cb=on_error, allow_reconnect=False)
        return cls(nc, refusals)

    async def refused(self, verb: str, subject: str) -> bool:
        """Whether the server reported refusing `verb` ("publish" or "subscription") on `subject`."""
        wanted = f'permissions violation for {verb} to "{subject.lower()}'
        await wait_for(lambda: any(wanted in said for said in self.refusals), timeout_s=5)
        return True

    async def close(self) -> None:
        await self.nc.close()


@pytest.fixture
async def admin(secured: Infrastructure) -> AsyncIterator[Client]:
    """The admin's connection, with every stream of earlier tests gone and the log and intake declared."""
    nc = await secured.nats_client().connect()
    js = nc.jetstream()
    for info in await js.streams_info():
        await js.delete_stream(info.config.name)
    window = ServiceSettings.model_fields["duplicate_window_s"].default
    for spec in (PATIENT_EVENTS, DISCHARGE_INTAKE, FILL_INTAKE):
        await declare_stream(js, spec, replicas=1, duplicate_window_s=window)
    yield nc
    await nc.drain()


# --- who may connect at all ------------------------------------------------------------------------------------


async def test_an_anonymous_client_and_a_wrong_password_are_refused(secured: Infrastructure) -> None:
    client = secured.nats_client("review")
    anonymous = client.model_copy(update={"user": None, "password": None})
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await anonymous.connect(allow_reconnect=False, connect_timeout=5)
    impostor = client.model_copy(update={"password": SecretStr("guessed")})
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await impostor.connect(allow_reconnect=False, connect_timeout=5)
    rightful = await client.connect(allow_reconnect=False)
    assert rightful.is_connected
    await rightful.close()


async def test_a_plaintext_nats_client_is_refused_by_the_tls_only_server(secured: Infrastructure) -> None:
    """A client that speaks the protocol in the clear, with a valid user and password, gets nowhere."""
    url = urlsplit(secured.nats_url)
    client = secured.nats_client("cli")
    assert client.password is not None
    connect = {"user": "cli", "pass": client.password.get_secret_value(), "verbose": False, "protocol": 1}

    def speak_plaintext() -> bytes:
        with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
            info = sock.recv(4096)
            assert info.startswith(b"INFO ") and json.loads(info[5:])["tls_required"] is True
            sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
            answer = b""
            while chunk := sock.recv(4096):  # the server closes the connection
                answer += chunk
            return answer

    answer = await asyncio.to_thread(speak_plaintext)
    assert b"PONG" not in answer
    assert b"TLS Required" in answer or answer == b""


async def test_a_client_verifies_the_servers_certificates_against_the_stacks_ca(
    secured: Infrastructure, tmp_path: Path
) -> None:
    """The same user and password, but trusting another CA: neither server is taken for the real one."""
    other_ca = str(LocalCA(tmp_path / "other-ca").ensure().cert_file)
    with pytest.raises(ssl.SSLCertVerificationError):
        await (
            secured.nats_client("cli")
            .model_copy(update={"tls_ca": other_ca})
            .connect(allow_reconnect=False, connect_timeout=5)
        )
    url = secured.service_database("review", f"t_review_{uuid.uuid4().hex[:8]}")
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg.connect(url.replace(urlsplit(url).query, f"sslmode=verify-full&sslrootcert={other_ca}"))


# --- who may publish what ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "intake", "stream", "other_intake"),
    [
        ("hospital", DISCHARGE_INTAKE_SUBJECT, DISCHARGE_INTAKE_STREAM, FILL_INTAKE_SUBJECT),
        ("pharmacy", FILL_INTAKE_SUBJECT, FILL_INTAKE_STREAM, DISCHARGE_INTAKE_SUBJECT),
    ],
)
async def test_an_integrator_publishes_on_its_intake_and_nowhere_else(
    secured: Infrastructure, admin: Client, user: str, intake: str, stream: str, other_intake: str
) -> None:
    integrator = await Connection.open(secured, user)
    patient = new_patient_id()
    message = native_discharge(patient) if user == "hospital" else native_fill(patient)
    body = message.model_dump_json().encode()
    try:
        ack = await integrator.nc.jetstream().publish(intake, body, headers={"Nats-Msg-Id": str(message.id)})
        assert ack.stream == stream

        # Another integrator's intake, and straight onto the patient log, as if reconciliation had validated it.
        for subject in (other_intake, event_subject(message)):
            with pytest.raises(nats.errors.TimeoutError):
                await integrator.nc.jetstream().publish(subject, body, timeout=REFUSED_WITHIN_S)
            assert await integrator.refused("publish", subject)
        # Nor may it read anyone's PHI (the log's subjects) or ask for a patient's key.
        await integrator.nc.subscribe(event_filter(TransitionOfCareRecorded))
        assert await integrator.refused("subscription", event_filter(TransitionOfCareRecorded))
        await integrator.nc.publish(PATIENT_KEYS, b"{}")
        assert await integrator.refused("publish", PATIENT_KEYS)
        await integrator.nc.subscribe(PATIENT_KEYS_MADE)
        assert await integrator.refused("subscription", PATIENT_KEYS_MADE)
    finally:
        await integrator.close()
    assert await stream_messages(admin, PATIENT_EVENTS_STREAM) == []
    assert len(await stream_messages(admin, stream)) == 1


async def test_only_review_may_publish_review_events_and_no_tool_may_read_another_users_replies(
    secured: Infrastructure, admin: Client
) -> None:
    forged = review_task_completed(new_patient_id())
    subject = event_subject(forged)
    for user in ("referral", "reconciliation", "notify", "cli", "web"):
        forger = await Connection.open(secured, user)
        try:
            with pytest.raises(nats.errors.TimeoutError):
                await forger.nc.jetstream().publish(
                    subject, forged.model_dump_json().encode(), timeout=REFUSED_WITHIN_S
                )
            assert await forger.refused("publish", subject)
        finally:
            await forger.close()

    snoop = await Connection.open(secured, "web")
    try:
        for inbox in ("_INBOX.>", "_INBOX.review.>", "_INBOX.cli.>"):
            await snoop.nc.subscribe(inbox)
            assert await snoop.refused("subscription", inbox)
    finally:
        await snoop.close()
    assert await stream_messages(admin, PATIENT_EVENTS_STREAM) == []


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    yield from serve(WebhookReceiver())


async def test_a_forged_review_task_completed_is_refused_and_never_acted_on(
    secured: Infrastructure, admin: Client, settings_for, run_service, receiver: WebhookReceiver
) -> None:
    """What an anonymous client did before: a forged completion that made notify send a correctly signed webhook
    ("double the insulin dose") to a physician of its choosing. Referral and notify run as themselves; the same
    kind of event, published by review, flows through both of them, and the forged one never does."""
    from mtm.notify.bootstrap import create_app as notify_app
    from mtm.notify.settings import NotifySettings
    from mtm.referral.bootstrap import ReferralSettings
    from mtm.referral.bootstrap import create_app as referral_app

    forged = review_task_completed(new_patient_id(), physician="dr-mallory")
    forged = forged.model_copy(
        update={
            "data": forged.data.model_copy(
                update={
                    "recommendations": tuple(
                        r.model_copy(update={"text": "Double the insulin dose"}) for r in forged.data.recommendations
                    )
                }
            )
        }
    )
    genuine = review_task_completed(new_patient_id(), physician="dr-house")
    notify_settings = settings_for(
        NotifySettings,
        on=secured,
        notify_webhook_url=receiver.url,
        notify_webhook_secret=WEBHOOK_SECRET,
        notify_backoff_base_s=0.05,
        notify_poll_s=0.05,
    )
    async with (
        run_service(referral_app(settings_for(ReferralSettings, on=secured))),
        run_service(notify_app(notify_settings)),
    ):
        for user in ("notify", "web"):
            forger = await Connection.open(secured, user)
            try:
                with pytest.raises(nats.errors.TimeoutError):
                    await forger.nc.jetstream().publish(
                        event_subject(forged), forged.model_dump_json().encode(), timeout=REFUSED_WITHIN_S
                    )
                assert await forger.refused("publish", event_subject(forged))
            finally:
                await forger.close()
        review = await Connection.open(secured, "review")
        try:
            await review.nc.jetstream().publish(
                event_subject(genuine), genuine.model_dump_json().encode(), headers={"Nats-Msg-Id": str(genuine.id)}
            )
        finally:
            await review.close()
        await wait_for(lambda: [r for r in receiver.received if "dr-house" in r.path], timeout_s=30)

    requested = [
        ReferralRequested.model_validate_json(m.data)
        for m in await stream_messages(admin, PATIENT_EVENTS_STREAM, event_filter(ReferralRequested))
    ]
    assert {r.patient_id for r in requested} == {genuine.patient_id}
    assert not [r for r in receiver.received if "dr-mallory" in r.path]
    completions = await stream_messages(admin, PATIENT_EVENTS_STREAM, event_filter(ReviewTaskCompleted))
    assert [ReviewTaskCompleted.model_validate_json(m.data).id for m in completions] == [genuine.id]


def _sample_subject(cls: type, patient: str) -> str:
    return patient_subject(patient, cls.EVENT_NAME)


async def test_every_event_is_refused_to_everyone_but_the_service_that_decides_it(
    secured: Infrastructure, admin: Client
) -> None:
    """Each service, the CLI and the web app publish every event of the log: only the producer's are taken."""
    patient = new_patient_id()
    users = [*(g.service for g in ACCESS.services), "cli", "web"]
    for user in users:
        connection = await Connection.open(secured, user)
        own = next((g.publishes for g in ACCESS.services if g.service == user), ())
        try:
            for grant in ACCESS.services:
                for cls in grant.publishes:
                    subject = _sample_subject(cls, patient)
                    if cls in own:
                        ack = await connection.nc.jetstream().publish(subject, b"{}")
                        assert ack.stream == PATIENT_EVENTS_STREAM
                    else:
                        await connection.nc.publish(subject, b"{}")
                        assert await connection.refused("publish", subject), (user, subject)
        finally:
            await connection.close()
    stored = await stream_messages(admin, PATIENT_EVENTS_STREAM)
    produced = [_sample_subject(cls, patient) for g in ACCESS.services for cls in g.publishes]
    assert sorted(m.subject for m in stored) == sorted(produced)


async def test_only_services_and_the_web_app_may_ask_for_patients_keys_and_only_the_keeper_answers(
    secured: Infrastructure, admin: Client, settings_for, run_service
) -> None:
    """A patient's key opens every sealed event of theirs: the CLI and integrators may not ask for it (the web app
    may, for the events its live updates open), and no one but reconciliation may pose as the keeper to hear who
    asks."""
    from mtm.reconciliation.bootstrap import ReconciliationSettings, create_app

    patient = new_patient_id()
    asked = GetPatientKeys(patient_ids=(patient,), create=False).model_dump_json().encode()
    async with run_service(create_app(settings_for(ReconciliationSettings, on=secured))):
        # Another service and the web app (its live updates) hear the keys the keeper announces as it makes them,
        # and may not announce one themselves.
        hearers = {user: await Connection.open(secured, user) for user in ("program", "web")}
        heard: dict[str, list[bytes]] = {user: [] for user in hearers}

        def keeping(into: list[bytes]):
            async def on_heard(msg) -> None:
                into.append(msg.data)

            return on_heard

        for user, hearing in hearers.items():
            await hearing.nc.subscribe(PATIENT_KEYS_MADE, cb=keeping(heard[user]))
            await hearing.nc.flush()
        for user in ("review", "web"):
            asking = await Connection.open(secured, user)
            try:
                keys, erased = await nats_key_source(asking.nc)([patient], True)
                assert set(keys) == {patient} and erased == set()
                await asking.nc.subscribe(PATIENT_KEYS)
                assert await asking.refused("subscription", PATIENT_KEYS)
            finally:
                await asking.close()
        try:
            for user, hearing in hearers.items():
                bodies = await wait_for(lambda user=user: heard[user] or None)
                assert [list(announced_keys(body)) for body in bodies] == [[patient]], user
                await hearing.nc.publish(PATIENT_KEYS_MADE, b"{}")
                assert await hearing.refused("publish", PATIENT_KEYS_MADE), user
        finally:
            for hearing in hearers.values():
                await hearing.close()
        tool = await Connection.open(secured, "cli")
        try:
            with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
                await tool.nc.request(PATIENT_KEYS, asked, timeout=REFUSED_WITHIN_S)
            assert await tool.refused("publish", PATIENT_KEYS)
            await tool.nc.subscribe(PATIENT_KEYS)
            assert await tool.refused("subscription", PATIENT_KEYS)
            await tool.nc.subscribe(PATIENT_KEYS_MADE)
            assert await tool.refused("subscription", PATIENT_KEYS_MADE)
        finally:
            await tool.close()


async def test_only_the_cli_may_send_an_erasure_and_the_keeper_erases_only_for_an_admin(
    secured: Infrastructure, admin: Client, settings_for, run_service
) -> None:
    """`mtm erase` runs as the CLI's user with an admin's token: NATS decides which clients may send it, the
    service decides from the signed token whether the person may."""
    from mtm.reconciliation.bootstrap import ReconciliationSettings, create_app

    patient = new_patient_id()
    erase = ErasePatient(patient_id=patient, reason="the patient asked").model_dump_json().encode()

    async with run_service(create_app(settings_for(ReconciliationSettings, on=secured))):
        for user in ("web", "review", "program"):
            other = await Connection.open(secured, user)
            try:
                with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
                    await other.nc.request(ERASE_PATIENT, erase, timeout=REFUSED_WITHIN_S, headers=actors.ADMIN)
                assert await other.refused("publish", ERASE_PATIENT)
            finally:
                await other.close()
        cli = await Connection.open(secured, "cli")
        try:
            as_pharmacist = await cli.nc.request(ERASE_PATIENT, erase, timeout=10, headers=actors.pharmacist("rph"))
            assert CommandReply.model_validate_json(as_pharmacist.data).outcome == "forbidden"
            as_admin = await cli.nc.request(ERASE_PATIENT, erase, timeout=10, headers=actors.ADMIN)
            assert CommandReply.model_validate_json(as_admin.data).outcome == "accepted"
        finally:
            await cli.close()
        erasures = await wait_for(
            lambda: stream_messages(admin, PATIENT_EVENTS_STREAM, event_filter(PatientErased)), timeout_s=30
        )
    assert [m.subject for m in erasures] == [patient_subject(patient, PatientErased.EVENT_NAME)]


async def test_a_service_reads_its_large_dead_letters_and_sends_back_only_what_it_may_publish(
    secured: Infrastructure, admin: Client, settings_for, run_service
) -> None:
    """`mtm dead-letters` as the CLI's user with an admin's token: reconciliation reads a body it kept in its
    object store and sends the discharge back onto its intake; review, which parked an event reconciliation
    decided, may not append that event to the log, and says so instead of going silent."""
    from mtm.reconciliation.bootstrap import ReconciliationSettings
    from mtm.reconciliation.bootstrap import create_app as reconciliation_app
    from mtm.review.bootstrap import ReviewSettings
    from mtm.review.bootstrap import create_app as review_app

    async def letters_of(service: str) -> list[DeadLetter]:
        found = await stream_messages(admin, dead_letter_stream(service), f"mtm.dlq.{service}.*")
        return [DeadLetter.model_validate_json(m.data) for m in found]

    async def ask(cli: Client, service: str, action: str, body) -> CommandReply:
        raw = await cli.request(
            dead_letters_subject(service, action), body.model_dump_json().encode(), timeout=10, headers=actors.ADMIN
        )
        return CommandReply.model_validate_json(raw.data)

    reconciliation = settings_for(ReconciliationSettings, on=secured)
    review = settings_for(ReviewSettings, on=secured)
    async with run_service(reconciliation_app(reconciliation)), run_service(review_app(review)):
        # Not JSON, and too large to travel inside its letter: the body goes to reconciliation's object store.
        large = b"{" + b"x" * 900_000
        await admin.jetstream().publish(DISCHARGE_INTAKE_SUBJECT, large, headers={"Nats-Msg-Id": str(uuid.uuid4())})
        # An event of reconciliation's that review cannot read.
        unreadable = patient_subject(new_patient_id(), MedicationsReconciled.EVENT_NAME)
        await admin.jetstream().publish(unreadable, b"{not json", headers={"Nats-Msg-Id": str(uuid.uuid4())})
        [parked_intake] = await wait_for(lambda: letters_of("reconciliation"), timeout_s=30)
        [parked_event] = await wait_for(lambda: letters_of("review"), timeout_s=30)
        assert parked_intake.payload_object is not None and parked_event.original_subject == unreadable

        cli = await secured.nats_client("cli").connect()
        try:
            listed = await ask(cli, "reconciliation", "list", ListDeadLetters())
            [letter] = listed.data["letters"]
            sequence = letter["sequence"]
            body = await ask(cli, "reconciliation", "get", GetDeadLetter(sequence=sequence, body_limit=10))
            assert body.ok and body.data["body_size"] == len(large), body
            assert base64.b64decode(body.data["body_base64"]) == large[:10]
            sent = await ask(cli, "reconciliation", "redrive", RedriveDeadLetter(sequence=sequence))
            assert sent.ok and sent.data["published_stream"] == DISCHARGE_INTAKE_STREAM, sent

            [foreign] = (await ask(cli, "review", "list", ListDeadLetters())).data["letters"]
            refused = await ask(cli, "review", "redrive", RedriveDeadLetter(sequence=foreign["sequence"]))
            assert refused.outcome == "invalid" and "only the service that decided" in refused.message, refused
        finally:
            await cli.close()
    events = await stream_messages(admin, PATIENT_EVENTS_STREAM)
    assert [m.subject for m in events] == [unreadable]  # nothing appended for review's letter


async def test_the_web_app_sends_only_its_pages_requests_and_follows_only_what_it_shows(
    secured: Infrastructure, admin: Client
) -> None:
    """The web app signs tokens for anyone who signs in, so what it may send is what its pages send: no
    disenrolment, no program-wide alert statistics, no rebuild, no erasure, no intake; and it reads only the events
    its live updates show, from their envelopes, and erasures (on which it forgets the patient's key)."""
    web = await Connection.open(secured, "web")
    try:
        # Sent: the server finds no one to answer it (no review runs here), or a review left running by an earlier
        # test on this server does not answer in time; whether it was refused is read below, from the server.
        with contextlib.suppress(nats.errors.NoRespondersError, nats.errors.TimeoutError):
            await web.nc.request(LIST_WORKLIST, b"{}", timeout=5)
        for subject in (
            DISENROLL_MEMBER,
            LIST_ALERT_RULE_STATS,
            rebuild_subject("review"),
            ERASE_PATIENT,
            FILL_INTAKE_SUBJECT,
        ):
            await web.nc.publish(subject, b"{}")
            assert await web.refused("publish", subject)
        # The server reports refusals in order: those above came, so one for the request would have come first.
        assert not any(f'publish to "{LIST_WORKLIST.lower()}"' in said for said in web.refusals)
        for subject in (f"{PATIENT_EVENTS_PREFIX}.>", event_filter(MedicationsReconciled)):
            await web.nc.subscribe(subject)
            assert await web.refused("subscription", subject)

        followed: list[str] = []

        async def on_event(msg) -> None:
            followed.append(msg.subject)

        for cls in (ReviewTaskCreated, PatientErased):
            await web.nc.subscribe(event_filter(cls), cb=on_event)
        await web.nc.flush()
        patient = new_patient_id()
        subjects = {patient_subject(patient, cls.EVENT_NAME) for cls in (ReviewTaskCreated, PatientErased)}
        for subject in subjects:
            await admin.publish(subject, b"{}")
        # Each subscription calls back from a task of its own: the two may come in either order.
        await wait_for(lambda: sorted(followed) == sorted(subjects), timeout_s=10)
    finally:
        await web.close()


async def test_only_the_log_s_writers_store_large_events_and_only_its_readers_read_them(
    secured: Infrastructure, admin: Client
) -> None:
    """The object store of events too large for one message holds what the log holds: a service stores one, the
    web app (which opens the events it follows) reads it back, and nobody else may read, write or purge it."""
    from mtm.contracts.subjects import PATIENT_EVENT_BODIES_STREAM
    from mtm.platform.bodies import BodyReference, EventBodies

    body = b'{"id":"a sealed event too large for one message"}' * 1000
    writer = await Connection.open(secured, "review")
    try:
        reference = BodyReference.of(await EventBodies(writer.nc).store(str(uuid.uuid4()), body))
        assert reference is not None
        with pytest.raises(nats.errors.TimeoutError):
            await writer.nc.jetstream().purge_stream(PATIENT_EVENT_BODIES_STREAM)
        assert await writer.refused("publish", f"$JS.API.STREAM.PURGE.{PATIENT_EVENT_BODIES_STREAM}")
    finally:
        await writer.close()
    web = await Connection.open(secured, "web")
    try:
        assert await EventBodies(web.nc).fetch(reference) == body
        await web.nc.publish(f"$O.{reference.bucket}.C.forged", b"x")
        assert await web.refused("publish", f"$O.{reference.bucket}.C.forged")
    finally:
        await web.close()
    for user in ("hospital", "cli"):
        outsider = await Connection.open(secured, user)
        try:
            with pytest.raises(nats.errors.TimeoutError):
                await EventBodies(outsider.nc).fetch(reference)
            assert await outsider.refused("publish", f"$JS.API.DIRECT.GET.{PATIENT_EVENT_BODIES_STREAM}")
        finally:
            await outsider.close()


# --- who may change the streams and consumers ---------------------------------------------------------------


async def test_no_service_may_delete_purge_or_reshape_the_log_or_touch_anothers_consumer(
    secured: Infrastructure, admin: Client
) -> None:
    owner = await Connection.open(secured, "reconciliation")  # the service that declares PATIENT_EVENTS
    try:
        js = owner.nc.jetstream()
        assert (await js.stream_info(PATIENT_EVENTS_STREAM)).config.name == PATIENT_EVENTS_STREAM
        shrunk = PATIENT_EVENTS.config(replicas=1, duplicate_window_s=600).evolve(max_msgs=1)
        theirs_letters = dead_letter_spec("review").config(replicas=1, duplicate_window_s=1, max_age_s=1)
        attempts = (
            ("$JS.API.STREAM.DELETE.PATIENT_EVENTS", lambda: js.delete_stream(PATIENT_EVENTS_STREAM)),
            ("$JS.API.STREAM.PURGE.PATIENT_EVENTS", lambda: js.purge_stream(PATIENT_EVENTS_STREAM)),
            ("$JS.API.STREAM.UPDATE.PATIENT_EVENTS", lambda: js.update_stream(shrunk)),
            # Another service's dead letters, which it may not reshape either.
            ("$JS.API.STREAM.UPDATE.DEAD_LETTERS_REVIEW", lambda: js.update_stream(theirs_letters)),
        )
        for subject, attempt in attempts:
            with pytest.raises(nats.errors.TimeoutError):
                await attempt()
            assert await owner.refused("publish", subject)
    finally:
        await owner.close()

    # Referral's durable, which a review user could otherwise re-point or drain.
    intruder = await Connection.open(secured, "review")
    try:
        theirs = "referral-review-task-completed"
        with pytest.raises(nats.errors.TimeoutError):
            await intruder.nc.jetstream().add_consumer(
                PATIENT_EVENTS_STREAM, ConsumerConfig(name=theirs, durable_name=theirs, filter_subject="mtm.>")
            )
        assert await intruder.refused("publish", f"$JS.API.CONSUMER.CREATE.{PATIENT_EVENTS_STREAM}.{theirs}")
    finally:
        await intruder.close()

    info = await admin.jetstream().stream_info(PATIENT_EVENTS_STREAM)
    assert info.config.deny_delete and info.config.max_msgs == -1
    assert [c.name for c in await admin.jetstream().consumers_info(PATIENT_EVENTS_STREAM)] == []


async def test_reconciliation_drains_and_deletes_its_retired_durable_but_may_not_recreate_it_or_delete_another(
    secured: Infrastructure, admin: Client
) -> None:
    """The durable an earlier version kept (`reconciliation-transition-of-care`) is read, acknowledged and deleted
    by reconciliation on upgrade; it may neither create nor re-point it, nor delete a durable it still keeps."""
    retired, kept = "reconciliation-transition-of-care", "reconciliation-projection"
    js_admin = admin.jetstream()
    for name, subject in ((retired, event_filter(TransitionOfCareRecorded)), (kept, event_filter(PatientErased))):
        await js_admin.add_consumer(
            PATIENT_EVENTS_STREAM, ConsumerConfig(name=name, durable_name=name, filter_subject=subject)
        )
    await js_admin.publish(_sample_subject(TransitionOfCareRecorded, new_patient_id()), b"{}")
    owner = await Connection.open(secured, "reconciliation")
    try:
        js = owner.nc.jetstream()
        drained = await js.pull_subscribe_bind(durable=retired, stream=PATIENT_EVENTS_STREAM)
        (message,) = await drained.fetch(batch=1, timeout=5)
        await message.ack_sync()
        info = await js.consumer_info(PATIENT_EVENTS_STREAM, retired)
        assert (info.num_pending, info.num_ack_pending) == (0, 0)
        with pytest.raises(nats.errors.TimeoutError):
            await js.add_consumer(
                PATIENT_EVENTS_STREAM, ConsumerConfig(name=retired, durable_name=retired, filter_subject="mtm.>")
            )
        assert await owner.refused("publish", f"$JS.API.CONSUMER.CREATE.{PATIENT_EVENTS_STREAM}.{retired}")
        with pytest.raises(nats.errors.TimeoutError):
            await js.delete_consumer(PATIENT_EVENTS_STREAM, kept)
        assert await owner.refused("publish", f"$JS.API.CONSUMER.DELETE.{PATIENT_EVENTS_STREAM}.{kept}")
        assert await js.delete_consumer(PATIENT_EVENTS_STREAM, retired)
    finally:
        await owner.close()
    assert [c.name for c in await js_admin.consumers_info(PATIENT_EVENTS_STREAM)] == [kept]


# --- Postgres ----------------------------------------------------------------------------------------------


async def test_a_service_role_reaches_its_own_database_only(secured: Infrastructure) -> None:
    run = uuid.uuid4().hex[:8]
    review_url = secured.service_database("review", f"t_review_{run}")
    referral_url = secured.service_database("referral", f"t_referral_{run}")
    own = await asyncpg.connect(review_url)
    try:
        assert await own.fetchval("SELECT current_user") == "mtm_review"
        assert not await own.fetchval("SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user")
    finally:
        await own.close()
    # Review's role and password, referral's database.
    review_on_referral = review_url.replace(f"/t_review_{run}?", f"/t_referral_{run}?")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for database"):
        await asyncpg.connect(review_on_referral)
    # Nor with referral's role and a guessed password.
    guessed = referral_url.replace(f":{urlsplit(referral_url).password}@", ":guessed@")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(guessed)


async def test_a_plaintext_postgres_connection_is_refused(secured: Infrastructure) -> None:
    url = secured.service_database("review", f"t_review_{uuid.uuid4().hex[:8]}")
    plaintext = url.replace(urlsplit(url).query, "sslmode=disable")
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="TLS"):
        await asyncpg.connect(plaintext)
    conn = await asyncpg.connect(url)  # the same user and password over TLS
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_an_owner_updates_the_retention_of_what_expires_and_leaves_the_log_to_the_admin(
    secured: Infrastructure, admin: Client, settings_for, run_service
) -> None:
    """A changed configuration of the log is the admin's to apply: the owning service starts on it as it is, while
    a retention set later reaches its intake and dead letters (and their stored bodies)."""
    from mtm.platform.status import wait_until_ready
    from mtm.reconciliation.bootstrap import ReconciliationSettings, create_app

    js = admin.jetstream()
    before = (await js.stream_info(PATIENT_EVENTS_STREAM)).config.duplicate_window
    settings = settings_for(
        ReconciliationSettings,
        on=secured,
        duplicate_window_s=before / 2,
        intake_max_age_s=3600.0,
        dead_letter_max_age_s=7200.0,
    )
    async with run_service(create_app(settings)):
        await wait_until_ready(secured.nats_client("cli"), ["reconciliation"], timeout_s=30)
    assert (await js.stream_info(PATIENT_EVENTS_STREAM)).config.duplicate_window == before
    for stream in (DISCHARGE_INTAKE_STREAM, FILL_INTAKE_STREAM):
        assert (await js.stream_info(stream)).config.max_age == 3600.0
    assert (await js.stream_info(dead_letter_stream("reconciliation"))).config.max_age == 7200.0
    # A second start with a longer period: the existing streams and the bodies' store take it.
    longer = settings_for(
        ReconciliationSettings, on=secured, intake_max_age_s=86_400.0, dead_letter_max_age_s=172_800.0
    )
    async with run_service(create_app(longer)):
        await wait_until_ready(secured.nats_client("cli"), ["reconciliation"], timeout_s=30)
    assert (await js.stream_info(DISCHARGE_INTAKE_STREAM)).config.max_age == 86_400.0
    assert (await js.stream_info(dead_letter_stream("reconciliation"))).config.max_age == 172_800.0
    bodies = await js.object_store(dead_letter_bucket("reconciliation"))
    assert (await bodies.status()).ttl == 172_800.0


async def test_a_database_an_older_mtm_made_as_the_superuser_is_handed_to_the_services_role(
    secured: Infrastructure,
) -> None:
    """`mtm up` on a data directory from before roles: the service's tables become its role's, and only its."""
    database = f"t_referral_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(secured.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    old = await asyncpg.connect(urlsplit(secured.database_url)._replace(path=f"/{database}").geturl())
    try:
        await old.execute("CREATE SCHEMA projection; CREATE TABLE projection.referrals (id bigserial PRIMARY KEY)")
        await old.execute("CREATE TABLE public.outbox (id bigserial PRIMARY KEY)")
    finally:
        await old.close()

    url = secured.service_database("referral", database)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO projection.referrals DEFAULT VALUES; INSERT INTO public.outbox DEFAULT VALUES")
        await conn.execute("DROP TABLE projection.referrals")  # only an owner may
    finally:
        await conn.close()
    review = urlsplit(secured.service_database("review", f"t_review_{uuid.uuid4().hex[:8]}"))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await asyncpg.connect(review._replace(path=f"/{database}").geturl())


async def test_a_server_that_requires_client_certificates_refuses_a_client_without_one(tmp_path: Path) -> None:
    """Mutual TLS, as a production server may require it (`MTM_NATS_TLS_CERT`/`MTM_NATS_TLS_KEY`)."""
    security = LocalSecurity(tmp_path / "security")
    server = EmbeddedNats(tmp_path / "nats", security, client_certificates=True)
    await asyncio.to_thread(server.start)
    try:
        client = server.client("review")
        with pytest.raises((ssl.SSLError, OSError, nats.errors.Error)):
            await client.connect(allow_reconnect=False, connect_timeout=5)
        certificate = security.ca.issue("review-client", client=True)
        with_certificate = client.model_copy(
            update={"tls_cert": str(certificate.cert), "tls_key": str(certificate.key)}
        )
        nc = await with_certificate.connect(allow_reconnect=False)
        assert nc.is_connected
        await nc.close()
    finally:
        await asyncio.to_thread(server.stop)
