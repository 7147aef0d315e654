"""`make run`: the stack with the web app, demo accounts and two discharges waiting for a pharmacist.

Nobody is signed in: the demo makes three accounts (a pharmacist, the demo patients' primary-care physician and an
admin), prints them with their passwords, publishes a FHIR R4 discharge bundle and a native discharge, and waits
until both review tasks are open. The rest is done in the browser, by people.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from mtm.cli.receiver import DemoReceiver
from mtm.cli.stack import data_dir
from mtm.cli.tool import ToolError, connect
from mtm.cli.up import StackInfo
from mtm.contracts import ReviewTaskCreated
from mtm.contracts.subjects import DISCHARGE_INTAKE_SUBJECT, event_filter, patient_of_subject

STEP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DemoAccount:
    user_id: str
    role: str
    practitioner_id: str | None
    what: str


DEMO_ACCOUNTS = (
    DemoAccount("ana", "pharmacist", "rph-ana", "reviews tasks: claim, complete, refer to the prescriber"),
    DemoAccount("drlee", "physician", "prac-pcp-42", "the demo patients' primary-care physician: referrals"),
    DemoAccount("admin", "admin", None, "accounts"),
)


def _demo_file(name: str) -> str:
    return (files("mtm.cli") / "demo_data" / name).read_text()


def native_discharge() -> tuple[bytes, str, str]:
    """The bundled native sample with fresh ids, so every run is a new patient and a new flow."""
    body = json.loads(_demo_file("native-discharge.json"))
    patient = str(uuid.uuid4())
    event_id = str(uuid.uuid4())
    body.update(id=event_id, correlation_id=event_id, subject=f"Patient/{patient}")
    body["data"]["patient"]["patient_id"] = patient
    return json.dumps(body).encode(), event_id, patient


def fhir_discharge() -> tuple[bytes, str, str]:
    """The bundled FHIR R4 discharge bundle (every kind of discrepancy) for a new patient."""
    bundle = json.loads(_demo_file("fhir-discharge.json"))
    patient = str(uuid.uuid4())
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["id"] = patient
    payload = json.dumps(bundle).replace('"Patient/p1"', f'"Patient/{patient}"').encode()
    return payload, f"demo-bundle:{uuid.uuid4()}", patient


def demo_passwords() -> dict[str, str]:
    """The demo accounts' passwords: made once per data directory (readable by this user only), then kept."""
    path = data_dir() / "demo-accounts.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    wanted = {a.user_id: known.get(a.user_id) or secrets.token_urlsafe(9) for a in DEMO_ACCOUNTS}
    if wanted != known:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(wanted, indent=2))
    return wanted


async def create_demo_accounts(web_database_url: str) -> dict[str, str]:
    """The demo accounts in the web app's database (reached as the web app's role)."""
    from mtm.web.accounts import Store

    passwords = demo_passwords()
    store = await Store.open(web_database_url)
    try:
        for account in DEMO_ACCOUNTS:
            await store.add_account(
                account.user_id, account.role, account.practitioner_id, passwords[account.user_id], replace=True
            )
    finally:
        await store.close()
    return passwords


async def run_demo(info: StackInfo, say: Callable[[str], None]) -> None:
    passwords = await create_demo_accounts(info.web_database_url)
    nc = await connect(info.nats)
    opened: asyncio.Queue[str] = asyncio.Queue()

    async def on_task(msg: Any) -> None:
        # The task itself is sealed with the patient's key: the envelope says whose task opened; people see the
        # task in the web app, which asks review for it with their token.
        await opened.put(patient_of_subject(msg.subject))

    await nc.subscribe(event_filter(ReviewTaskCreated), cb=on_task)
    try:
        js = nc.jetstream()
        patients = set()
        for make, what in ((fhir_discharge, "a FHIR R4 discharge bundle"), (native_discharge, "a native discharge")):
            payload, msg_id, patient = make()
            await js.publish(DISCHARGE_INTAKE_SUBJECT, payload, headers={"Nats-Msg-Id": msg_id}, timeout=10)
            patients.add(patient)
            say(f"hospital published {what} for Patient/{patient}")
        while patients:
            patient = await asyncio.wait_for(opened.get(), STEP_TIMEOUT_S)
            if patient in patients:
                patients.discard(patient)
                say(f"review task open for Patient/{patient}")
    finally:
        await nc.drain()
    say("")
    say(f"Open {info.web_url} and sign in (nobody is signed in yet):")
    for account in DEMO_ACCOUNTS:
        say(f"  {account.user_id:<7} password {passwords[account.user_id]:<14} {account.role:<10} {account.what}")
    say(f"(the passwords are kept in {data_dir() / 'demo-accounts.json'}; `mtm login ana` signs the CLI in)")


class DemoRun:
    """The physician's webhook endpoint for the demo, and the demo once the stack is up."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        # A Standard Webhooks secret (`whsec_<base64>`), the form any receiver's library takes.
        self._secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self._receiver = DemoReceiver(self._secret.encode(), self._on_post)

    def start(self) -> DemoRun:
        self._receiver.start()
        return self

    def env(self) -> dict[str, str]:
        """What notify needs to deliver to this endpoint."""
        return {"MTM_NOTIFY_WEBHOOK_URL": self._receiver.url, "MTM_NOTIFY_WEBHOOK_SECRET": self._secret}

    def _on_post(self, body: bytes, webhook_id: str) -> None:
        # On the receiver's thread, as a pharmacist's referral reaches the physician.
        post = json.loads(body)
        self._say(f"physician {post['physician_id']} received a signed webhook ({post['kind']} {post['referral_id']})")

    async def run(self, info: StackInfo) -> int:
        self._say("demo: accounts, and two discharges for the pharmacist ...")
        try:
            await run_demo(info, self._say)
        except (TimeoutError, ToolError, OSError) as exc:
            self._say(f"demo did not finish: {exc or type(exc).__name__}; see the service logs above")
            return 1
        return 0

    def stop(self) -> None:
        self._receiver.stop()
