"""`mtm` against real service processes on real NATS JetStream and Postgres: a discharge published, listed,
claimed; refusals with their exit codes; dead letters listed, read, fixed and redriven until processed.

Every command runs as a person runs it (its own process, the token `mtm login` would have saved in MTM_TOKEN);
the subprocess timeout only guards against a hang, nothing here asserts how long anything takes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import actors
from support.processes import ServiceProcesses

from mtm.cli.demo import fhir_discharge
from mtm.contracts.dead_letter import DeadLetterRedriven, redrive_record_subject
from mtm.contracts.identity import Actor
from mtm.contracts.subjects import DISCHARGE_INTAKE_SUBJECT, dead_letter_stream
from mtm.devstack.infra import Infrastructure
from mtm.platform.connection import NatsClient
from mtm.platform.status import wait_until_ready

pytestmark = pytest.mark.e2e
RUNNING = ("reconciliation", "review")
HANG_GUARD_S = 120
# People, signed for when a command runs (`signed`): a token minted at import expires 15 minutes into the run,
# and a command run after a slow stretch of the suite was refused "the actor token has expired".
PHARMACIST = Actor(user_id="rph-cli", role="pharmacist", practitioner_id="rph-cli")
OTHER_PHARMACIST = Actor(user_id="rph-other", role="pharmacist", practitioner_id="rph-other")
PHYSICIAN = Actor(user_id="user-dr-cli", role="physician", practitioner_id="dr-cli")
ADMIN = Actor(user_id="ops", role="admin")


async def _delete_streams(client: NatsClient) -> None:
    nc = await client.connect()
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            await js.delete_stream(info.config.name)
    finally:
        await nc.drain()


@pytest.fixture(scope="module")
def stack(infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infrastructure]:
    """Reconciliation and review as OS processes on streams of their own."""
    asyncio.run(_delete_streams(infra.nats_client()))
    services = ServiceProcesses(infra, tmp_path_factory.mktemp("cli-stack") / "logs")
    for name in RUNNING:
        services.start(name)
    try:
        asyncio.run(wait_until_ready(infra.nats_client("cli"), RUNNING, timeout_s=180))
        yield infra
    finally:
        codes = services.stop_all()
    assert all(code == 0 for code in codes.values()), codes


@pytest.fixture
def mtm(stack: Infrastructure, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MTM_")}
    base.update(cli_env(stack), MTM_DATA_DIR=str(tmp_path / "data"))

    def run(*args: str, token: Actor | str = PHARMACIST) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "mtm.cli.main", *args],
            env={**base, "MTM_TOKEN": signed(token)},
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=HANG_GUARD_S,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    return run


def signed(token: Actor | str) -> str:
    """A person's token, signed now, or a token as given (a forged one)."""
    return actors.ISSUER.issue(token) if isinstance(token, Actor) else token


def cli_env(stack: Infrastructure) -> dict[str, str]:
    """`mtm`'s connection as the stack's CLI user: its password, TLS against the stack's CA."""
    client = stack.nats_client("cli")
    found = {"MTM_NATS_URL": client.url, "MTM_NATS_USER": client.user, "MTM_NATS_TLS_CA": client.tls_ca}
    if client.password is not None:
        found["MTM_NATS_PASSWORD"] = client.password.get_secret_value()
    return {name: value for name, value in found.items() if value is not None}


def until(condition: Callable[[], Any], what: str, timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.3)
    pytest.fail(f"never: {what}")


def tasks_of(mtm: Callable[..., subprocess.CompletedProcess[str]], patient: str) -> list[dict[str, Any]]:
    listed = mtm("tasks", "--patient", f"Patient/{patient}", "--json")
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout)["data"])


def discharge_file(tmp_path: Path, name: str = "discharge.json") -> tuple[Path, str, bytes]:
    payload, _, patient = fhir_discharge()
    path = tmp_path / name
    path.write_bytes(payload)
    return path, patient, payload


def test_a_discharge_is_published_listed_and_claimed_through_mtm(mtm, tmp_path: Path) -> None:
    path, patient, _ = discharge_file(tmp_path)
    published = mtm("publish-discharge", "--json", str(path))
    assert published.returncode == 0, published.stderr
    line = json.loads(published.stdout)
    assert line["patients"] == [f"Patient/{patient}"] and line["stream"] == "DISCHARGE_INTAKE"
    assert not line["duplicate"]
    again = mtm("publish-discharge", str(path))
    assert again.returncode == 0 and "yes" in again.stdout  # the Duplicate column: JetStream dropped the re-send

    [task] = until(lambda: tasks_of(mtm, patient), "a review task for the published discharge")
    people = mtm("tasks", "--patient", patient)
    assert people.returncode == 0
    header = people.stdout.splitlines()[0]
    for column in ("Task", "Priority", "Due", "Status", "Patient", "Owner"):
        assert column in header
    assert task["task_id"] in people.stdout and f"Patient/{patient}" in people.stdout

    claimed = mtm("claim", task["task_id"])
    assert claimed.returncode == 0, claimed.stderr
    taken = mtm("claim", task["task_id"], token=OTHER_PHARMACIST)
    assert taken.returncode == 1 and "conflict" in taken.stderr
    as_json = mtm("claim", task["task_id"], "--json", token=OTHER_PHARMACIST)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["outcome"] == "conflict"

    medlist = mtm("medlist", f"Patient/{patient}")
    assert medlist.returncode == 0, medlist.stderr
    assert "Medication" in medlist.stdout and "Status" in medlist.stdout
    fhir_list = json.loads(mtm("medlist", patient, "--fhir").stdout)
    assert fhir_list["resourceType"] == "List"
    nobody = mtm("medlist", f"nobody-{uuid.uuid4().hex[:8]}")
    assert nobody.returncode == 1 and "not found" in nobody.stderr


def test_refusals_by_role_and_token_exit_1(mtm) -> None:
    forbidden = mtm("dead-letters", "list", "reconciliation", token=PHYSICIAN)
    assert forbidden.returncode == 1 and "forbidden" in forbidden.stderr
    unsigned = mtm("tasks", token="not-a-token")
    assert unsigned.returncode == 1 and "unauthorized" in unsigned.stderr and "mtm login" in unsigned.stderr
    no_service = mtm("program", "p1")  # the program service is not running on this stack
    assert no_service.returncode == 3 and "no service answers" in no_service.stderr


def test_mtm_tasks_into_a_closed_pipe_ends_quietly(mtm, stack: Infrastructure, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "mtm.cli.main", "tasks"],
        env={**os.environ, **cli_env(stack), "MTM_TOKEN": signed(PHARMACIST), "MTM_DATA_DIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # `| head` that has read what it wanted
    try:
        code = process.wait(timeout=HANG_GUARD_S)
    finally:
        process.kill()
    assert code in (0, 141)  # 0 when nothing was written (no tasks), else the SIGPIPE code
    assert process.stderr.read() == ""


async def _publish_raw(client: NatsClient, payload: bytes) -> int:
    """As a hospital's system publishes: straight onto the intake, without `mtm`'s check."""
    nc = await client.connect()
    try:
        ack = await nc.jetstream().publish(
            DISCHARGE_INTAKE_SUBJECT, payload, headers={"Nats-Msg-Id": f"hospital:{uuid.uuid4()}"}
        )
        return ack.seq
    finally:
        await nc.drain()


async def _redrive_record(client: NatsClient, sequence: int) -> DeadLetterRedriven:
    nc = await client.connect()
    try:
        raw = await nc.jetstream().get_last_msg(
            dead_letter_stream("reconciliation"), redrive_record_subject("reconciliation", sequence)
        )
        return DeadLetterRedriven.model_validate_json(raw.data or b"")
    finally:
        await nc.drain()


def test_a_parked_discharge_is_read_fixed_and_redriven_until_it_is_processed(
    mtm, stack: Infrastructure, tmp_path: Path
) -> None:
    marker = f"PHI-MARKER-{uuid.uuid4().hex[:8]}"
    fixed_path, patient, fixed = discharge_file(tmp_path, "fixed.json")
    bundle = json.loads(fixed)
    bundle["identifier"] = {"system": "urn:example:hospital", "value": marker}
    fixed_path.write_text(json.dumps(bundle))
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]
    broken = json.dumps(bundle).encode()
    broken_path = tmp_path / "broken.json"
    broken_path.write_bytes(broken)

    refused = mtm("publish-discharge", str(broken_path))
    assert refused.returncode == 1 and "no Patient resource" in refused.stderr  # mtm would not send it
    intake_seq = asyncio.run(_publish_raw(stack.nats_client("hospital"), broken))  # the hospital's system does

    def parked() -> dict[str, Any] | None:
        listed = mtm("dead-letters", "list", "reconciliation", "--json", token=ADMIN)
        assert listed.returncode == 0, listed.stderr
        letters = json.loads(listed.stdout)["data"]["letters"]
        return next((x for x in letters if x["original_sequence"] == intake_seq), None)

    letter = until(parked, "the bundle without a Patient in DEAD_LETTERS_RECONCILIATION")
    assert "Patient" in letter["reason"] and letter["original_subject"] == DISCHARGE_INTAKE_SUBJECT
    assert letter["redriven"] is None
    sequence = str(letter["sequence"])

    people = mtm("dead-letters", "list", "reconciliation", token=ADMIN)
    assert people.returncode == 0 and "Reason" in people.stdout and letter["reason"][:40] in people.stdout
    assert marker not in people.stdout + people.stderr  # reasons only: no body by default

    shown = mtm("dead-letters", "show", "reconciliation", sequence, "--json", token=ADMIN)
    assert shown.returncode == 0, shown.stderr
    assert base64.b64decode(json.loads(shown.stdout)["data"]["body_base64"]) == broken
    assert marker in mtm("dead-letters", "show", "reconciliation", sequence, token=ADMIN).stdout
    body_only = mtm("dead-letters", "show", "reconciliation", sequence, "--body-only", token=ADMIN)
    assert body_only.stdout.encode() == broken

    still_broken = mtm("dead-letters", "redrive", "reconciliation", sequence, "--body", str(broken_path), token=ADMIN)
    assert still_broken.returncode == 1 and "would dead-letter it again" in still_broken.stderr
    not_admin = mtm("dead-letters", "redrive", "reconciliation", sequence, token=PHARMACIST)
    assert not_admin.returncode == 1 and "forbidden" in not_admin.stderr
    missing = mtm("dead-letters", "show", "reconciliation", "999999", token=ADMIN)
    assert missing.returncode == 1 and "no dead letter" in missing.stderr

    redriven = mtm("dead-letters", "redrive", "reconciliation", sequence, "--body", str(fixed_path), token=ADMIN)
    assert redriven.returncode == 0, redriven.stderr
    assert "sent back to mtm.intake.discharge.v1" in redriven.stdout

    until(lambda: tasks_of(mtm, patient), "a review task for the redriven discharge")
    after = parked()
    assert after is not None and after["redriven"]["by"] == "ops" and after["redriven"]["edited"] is True
    record = asyncio.run(_redrive_record(stack.nats_client(), int(sequence)))
    assert record.redriven_by == "ops" and record.edited and record.published_stream == "DISCHARGE_INTAKE"

    twice = mtm("dead-letters", "redrive", "reconciliation", sequence, "--body", str(fixed_path), token=ADMIN)
    assert twice.returncode == 1 and "redriven already" in twice.stderr and "--again" in twice.stderr


def test_an_admin_erases_a_patient_through_mtm_and_they_are_gone(mtm, tmp_path: Path) -> None:
    path, patient, _ = discharge_file(tmp_path, "to-erase.json")
    assert mtm("publish-discharge", str(path)).returncode == 0
    until(lambda: tasks_of(mtm, patient), "a review task for the discharge to erase")

    not_admin = mtm("erase", f"Patient/{patient}", "--reason", "request of the patient")
    assert not_admin.returncode == 1 and "forbidden" in not_admin.stderr
    erased = mtm("erase", f"Patient/{patient}", "--reason", "request of the patient", "--json", token=ADMIN)
    assert erased.returncode == 0, erased.stderr
    reply = json.loads(erased.stdout)
    assert reply["outcome"] == "accepted" and reply["status"] == "erased" and reply["resource_id"] == patient
    again = mtm("erase", patient, "--reason", "request of the patient", token=ADMIN)
    assert again.returncode == 0 and "erased before" in again.stdout

    until(lambda: not tasks_of(mtm, patient), "the erased patient's task gone from the worklist")
    gone = until(lambda: (r := mtm("medlist", patient)).returncode == 1 and r, "the erased patient's list gone")
    assert "not found" in gone.stderr


def test_an_admin_rebuilds_a_service_through_mtm(mtm) -> None:
    not_admin = mtm("rebuild", "review")
    assert not_admin.returncode == 1 and "forbidden" in not_admin.stderr
    rebuilt = mtm("rebuild", "review", "--json", token=ADMIN)
    assert rebuilt.returncode == 0, rebuilt.stderr
    [report] = [json.loads(line) for line in rebuilt.stdout.splitlines()]
    assert report["service"] == "review" and report["phase"] == "swapped"
    not_running = mtm("rebuild", "program", token=ADMIN)  # the program service is not running on this stack
    assert not_running.returncode == 3 and "program is not running" in not_running.stderr
