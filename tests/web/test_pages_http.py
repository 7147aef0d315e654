"""The web app over HTTP on real NATS, Postgres and services: who may open and do what, CSRF, sign-in limits."""

from __future__ import annotations

import html
import io
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pypdf import PdfReader
from support.events import mtm_enrolled, publish_event
from support.events import sample_discharge as discharge
from support.jetstream import wait_for
from support.web import ACCOUNTS, csrf_of, sign_in, signed_in

from mtm.cli.demo import fhir_discharge
from mtm.contracts.subjects import DISCHARGE_INTAKE_SUBJECT
from mtm.documents.action_plan import STANDARD_HEADINGS

pytestmark = pytest.mark.integration


async def test_a_pharmacist_and_a_physician_do_their_whole_job_over_http(stack, web, nc):
    pharmacist = await signed_in(web, "ana")
    patient = f"p-{uuid.uuid4().hex[:10]}"
    await nc.jetstream().publish(DISCHARGE_INTAKE_SUBJECT, discharge(patient))

    async def task_on_worklist():
        page = await pharmacist.get("/worklist")
        return page.text if f"Patient/{patient}" in page.text else None

    worklist = await wait_for(task_on_worklist, timeout_s=30)
    task_id = worklist.split(f"Patient/{patient}")[0].rsplit('href="/tasks/', 1)[1].split('"')[0]
    task = await pharmacist.get(f"/tasks/{task_id}")
    assert task.status_code == 200
    assert "Home and discharge medications" in task.text and "omission" in task.text

    claimed = await pharmacist.post(f"/tasks/{task_id}/claim", data={"csrf_token": csrf_of(task.text)})
    assert claimed.status_code == 303 and claimed.headers["location"] == f"/tasks/{task_id}?done=claimed"
    task = await pharmacist.get(f"/tasks/{task_id}")
    completed = await pharmacist.post(
        f"/tasks/{task_id}/complete",
        data={
            "csrf_token": csrf_of(task.text),
            "note": "Statin omitted without a reason.",
            "rec-0-text": "Restart atorvastatin 40 mg daily",
            "rec-0-action": "start",
            "rec-0-ingredients": "atorvastatin",
            "rec-0-priority": "urgent",
            "rec-0-refer": "on",
        },
    )
    assert completed.status_code == 303, completed.text

    physician = await signed_in(web, "drlee")

    async def referral_in_inbox():
        page = await physician.get("/referrals")
        return page.text if "Restart atorvastatin" in page.text else None

    inbox = await wait_for(referral_in_inbox, timeout_s=30)
    referral_id = inbox.split('href="/referrals/', 1)[1].split('"')[0]
    page = await physician.get(f"/referrals/{referral_id}")
    assert page.status_code == 200 and "Alerts behind this recommendation" in page.text

    other = await signed_in(web, "drkim")
    assert (await other.get(f"/referrals/{referral_id}")).status_code == 404
    assert "Restart atorvastatin" not in (await other.get("/referrals")).text
    forged = await other.post(
        f"/referrals/{referral_id}/answer",
        data={"csrf_token": csrf_of((await other.get("/referrals")).text), "decision": "declined"},
    )
    assert forged.status_code == 404

    acknowledged = await physician.post(
        f"/referrals/{referral_id}/acknowledge", data={"csrf_token": csrf_of(page.text)}
    )
    assert acknowledged.status_code == 303
    page = await physician.get(f"/referrals/{referral_id}")
    assert "read " in page.text
    answered = await physician.post(
        f"/referrals/{referral_id}/answer",
        data={"csrf_token": csrf_of(page.text), "decision": "accepted", "note": "Restarted."},
    )
    assert answered.status_code == 303, answered.text

    async def outcome_on_task():
        page = await pharmacist.get(f"/tasks/{task_id}")
        return page.text if "status-accepted" in page.text else None

    shown = await wait_for(outcome_on_task, timeout_s=15)
    assert "Restarted." in shown
    for client in (pharmacist, physician, other):
        await client.aclose()


def pages_and_actions(web) -> tuple[list[str], list[str]]:
    """Every page (GET) and every action (POST) of the app with its path parameters filled in."""
    from starlette.routing import Route

    some = str(uuid.uuid4())
    gets, posts = [], []
    for route in web.app.routes:
        if not isinstance(route, Route) or route.path in ("/login", "/logout", "/api/login", "/healthz"):
            continue
        if route.path.startswith("/auth/"):
            continue
        path = route.path.replace("{task_id}", some).replace("{referral_id}", some).replace("{patient_id}", "p-1")
        path = path.replace("{alert:int}", "0").replace("{recommendation_id}", some)
        if "POST" in (route.methods or ()):
            posts.append(path)
        if "GET" in (route.methods or ()) and path != "/":
            gets.append(path)
    return gets, posts


async def test_without_a_session_every_page_and_action_sends_to_sign_in(web):
    gets, posts = pages_and_actions(web)
    assert len(gets) >= 8 and len(posts) >= 5
    async with web.client() as anonymous:
        for path in gets:
            response = await anonymous.get(path)
            assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), path
        for path in posts:
            response = await anonymous.post(path, data={"csrf_token": "x"})
            assert response.status_code == 303 and response.headers["location"].startswith("/login"), path
    async with web.client() as forged:
        forged.cookies.set("mtm_session", "not-signed")
        assert (await forged.get("/worklist")).status_code == 303


async def test_every_form_needs_its_csrf_token(web):
    _, posts = pages_and_actions(web)
    for user in ("ana", "drlee", "root"):
        client = await signed_in(web, user)
        for path in [*posts, "/logout"]:
            missing = await client.post(path, data={})
            wrong = await client.post(path, data={"csrf_token": "guessed"})
            assert missing.status_code == 403 and wrong.status_code == 403, (user, path)
        await client.aclose()
    async with web.client() as anonymous:
        await anonymous.get("/login")
        refused = await anonymous.post("/login", data={"user": "ana", "password": ACCOUNTS["ana"][2]})
        assert refused.status_code == 403


async def test_sessions_are_signed_httponly_samesite_cookies_and_sign_out_ends_them(web):
    client = web.client()
    response = await sign_in(client, "ana", ACCOUNTS["ana"][2])
    cookie = response.headers["set-cookie"].lower()
    assert "mtm_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert response.headers["location"] == "/worklist"
    stolen = client.cookies.get("mtm_session")
    page = await client.get("/worklist")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert (await client.post("/logout", data={"csrf_token": csrf_of(page.text)})).status_code == 303
    async with web.client() as replay:
        replay.cookies.set("mtm_session", stolen)
        assert (await replay.get("/worklist")).status_code == 303
    await client.aclose()


async def test_a_role_cannot_open_another_roles_pages(web):
    physician = await signed_in(web, "drlee")
    assert (await physician.get("/worklist")).status_code == 403
    assert (await physician.get("/admin")).status_code == 403
    pharmacist = await signed_in(web, "ana")
    assert (await pharmacist.get("/referrals")).status_code == 403
    for client in (physician, pharmacist):
        await client.aclose()


async def test_sign_in_is_throttled_after_repeated_failures(web):
    async with web.client() as client:
        for _ in range(5):
            assert (await sign_in(client, "ben", "wrong-password")).status_code == 401
        limited = await sign_in(client, "ben", ACCOUNTS["ben"][2])
        assert limited.status_code == 429 and "Too many failed sign-ins" in limited.text
        api = await client.post("/api/login", json={"user": "ben", "password": ACCOUNTS["ben"][2]})
        assert api.status_code == 429
        other = await sign_in(client, "ana", ACCOUNTS["ana"][2])
        assert other.status_code == 303


async def test_the_command_line_gets_a_token_for_the_account(web):
    async with web.client() as client:
        refused = await client.post("/api/login", json={"user": "drlee", "password": "nope"})
        assert refused.status_code == 401
        form = await client.post("/api/login", data={"user": "drlee", "password": ACCOUNTS["drlee"][2]})
        assert form.status_code == 415
        granted = await client.post("/api/login", json={"user": "drlee", "password": ACCOUNTS["drlee"][2]})
    assert granted.status_code == 200
    body = granted.json()
    from support import actors

    from mtm.platform.identity import TokenVerifier

    actor = TokenVerifier([actors.PUBLIC_KEY]).verify(f"Bearer {body['token']}")
    assert (actor.user_id, actor.role, actor.practitioner_id) == ("drlee", "physician", "prac-pcp-42")


async def test_the_worklist_stream_sends_the_view_then_each_new_task(stack, web, nc):
    import asyncio
    import json as jsonlib

    pharmacist = await signed_in(web, "ana")
    patient = f"p-{uuid.uuid4().hex[:10]}"
    events: list[tuple[str, dict]] = []
    got_task = asyncio.Event()

    async def listen() -> None:
        name = ""
        async with pharmacist.stream("GET", "/worklist/events", timeout=None) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((name, jsonlib.loads(line.removeprefix("data: "))))
                    if name == "upsert" and f"Patient/{patient}" in events[-1][1]["html"]:
                        got_task.set()
                        return

    listener = asyncio.create_task(listen())
    await wait_for(lambda: any(name == "section" and data["id"] == "followup" for name, data in events))
    assert [name for name, _ in events[:4]] == ["ready", "section", "section", "section"]
    await nc.jetstream().publish(DISCHARGE_INTAKE_SUBJECT, discharge(patient))
    await asyncio.wait_for(got_task.wait(), timeout=30)
    await listener
    [upsert] = [data for name, data in events if name == "upsert"]
    assert upsert["list"] == "tasks" and upsert["id"].startswith("task-") and "requested" in upsert["html"]
    await pharmacist.aclose()


TASK_ROW = re.compile(r'<tr id="task-([0-9a-f-]{36})"[^>]*>\s*<td>.*?</td>\s*<td>([^<]+)</td>', re.S)
ERROR = re.compile(r'<p class="error" role="alert">([^<]*)</p>')


async def tasks_of(client, patient: str, *, count: int = 1) -> dict[str, str]:
    """The patient's open tasks on the worklist, by reason (once `count` of them are there)."""

    async def listed():
        page = await client.get(f"/worklist?patient={patient}")
        found = {reason.strip(): task_id for task_id, reason in TASK_ROW.findall(page.text)}
        return found if len(found) >= count else None

    return await wait_for(listed, timeout_s=30)


def error_of(text: str) -> str:
    found = ERROR.search(text)
    assert found, "the page shows no error"
    return html.unescape(found.group(1))


async def post(client, path: str, page: str, **data):
    return await client.post(path, data={"csrf_token": csrf_of(page), **data})


async def test_release_reassign_and_override_each_shown_only_to_who_may(stack, web, nc):
    payload, msg_id, patient = fhir_discharge()  # the demo's bundle: discrepancies and drug alerts
    await nc.jetstream().publish(DISCHARGE_INTAKE_SUBJECT, payload, headers={"Nats-Msg-Id": msg_id})
    ana, ben, root = [await signed_in(web, user) for user in ("ana", "ben", "root")]
    task_id = (await tasks_of(ana, patient))["post discharge review"]
    path = f"/tasks/{task_id}"

    page = (await ana.get(path)).text
    assert 'id="claim"' in page and "complete-form" not in page and "release-form" not in page
    assert "Override alert" not in page and "reassign-form" not in page
    admin_page = (await root.get(path)).text
    assert 'id="claim"' not in admin_page and "reassign-form" in admin_page and "release-form" not in admin_page

    page = (await ben.get(path)).text
    assert (await post(ben, f"{path}/claim", page)).status_code == 303
    page = (await ana.get(path)).text
    assert "Claimed by rph-ben" in page and "release-form" not in page and "Override alert" not in page
    refused = await post(ana, f"{path}/release", page)  # not hers: the service says so, in one line
    assert refused.status_code == 409 and error_of(refused.text) == "task is claimed by rph-ben"

    page = (await ben.get(path)).text
    assert "release-form" in page and "reassign-form" in page and "complete-form" in page
    released = await post(ben, f"{path}/release", page, reason="Off shift")
    assert released.status_code == 303 and released.headers["location"] == f"{path}?done=released"
    page = (await ben.get(released.headers["location"])).text
    assert "Task released" in page and 'id="claim"' in page and "complete-form" not in page

    page = (await ana.get(path)).text
    assert (await post(ana, f"{path}/claim", page)).status_code == 303
    page = (await ana.get(path)).text
    assert 'value="rph-ben"' in page  # the other pharmacists to hand it to
    handed = await post(ana, f"{path}/reassign", page, pharmacist_id="rph-ben")
    assert handed.status_code == 303 and handed.headers["location"] == f"{path}?done=reassigned"
    page = (await ana.get(path)).text
    assert "Claimed by rph-ben" in page and "complete-form" not in page
    bad_id = await post(ana, f"{path}/reassign", page, pharmacist_id="not an id!")
    assert bad_id.status_code == 400 and error_of(bad_id.text).startswith("pharmacist_id:")

    page = (await ben.get(path)).text
    alerts = re.findall(r'action="/tasks/[^/]+/alerts/(\d+)/override"', page)
    assert alerts, "the holder of the task can override its alerts"
    alert = alerts[0]
    empty = await post(ben, f"{path}/alerts/{alert}/override", page, reason_code="will-monitor", reason=" ")
    assert empty.status_code == 400 and error_of(empty.text).startswith("reason:")
    beyond = await post(ben, f"{path}/alerts/999/override", page, reason_code="will-monitor", reason="Watching")
    assert beyond.status_code == 400 and "alert: the task has" in error_of(beyond.text)
    done = await post(
        ben, f"{path}/alerts/{alert}/override", page, reason_code="will-monitor", reason="INR checked weekly"
    )
    assert done.status_code == 303 and done.headers["location"] == f"{path}?done=overridden"

    async def overridden():
        shown = (await ben.get(path)).text
        return shown if f'id="alert-{alert}" data-overridden="yes"' in shown else None

    shown = await wait_for(overridden, timeout_s=15)
    assert "Overridden (will monitor): INR checked weekly" in shown
    assert f'action="/tasks/{task_id}/alerts/{alert}/override"' not in shown

    # An admin covering an absence puts it back on the worklist; a physician may do none of it.
    admin_page = (await root.get(path)).text
    assert "release-form" in admin_page and "complete-form" not in admin_page
    assert (await post(root, f"{path}/release", admin_page)).status_code == 303
    physician = await signed_in(web, "drlee")
    assert (await post(physician, f"{path}/release", (await physician.get("/referrals")).text)).status_code == 403

    # Documented as a TMR (ticked): a problem raised by the overridden alert's neighbour, what was done about it.
    page = (await ana.get(path)).text
    assert (await post(ana, f"{path}/claim", page)).status_code == 303
    page = (await ana.get(path)).text
    assert "Document as an MTM review (TMR)" in page and f'value="alert-{alert}"' in page
    tmr = {
        "doc": "on",
        "doc-performed-on": datetime.now(UTC).date().isoformat(),
        "prob-0-detail": "Two statins on the discharge list",
        "prob-0-category": "unnecessary-drug-therapy",
        "prob-0-origin": f"alert-{alert}",
        "prob-0-mitigation": "3",
        "pml-0-name": "",  # every row cleared: review makes the list from the chart
    }
    assert (await post(ana, f"{path}/complete", page, **tmr)).status_code == 303
    page = (await ana.get(path)).text
    assert "Two statins on the discharge list" in page and "patient explanation" in page
    for client in (ana, ben, root, physician):
        await client.aclose()


async def test_a_cmr_is_documented_its_papers_previewed_and_downloaded_and_outcomes_recorded(stack, web, nc):
    patient = f"p-{uuid.uuid4().hex[:10]}"
    await nc.jetstream().publish(DISCHARGE_INTAKE_SUBJECT, discharge(patient))
    ana = await signed_in(web, "ana")
    discharge_task = (await tasks_of(ana, patient))["post discharge review"]
    await publish_event(nc, mtm_enrolled(patient))  # the member is enrolled: a CMR is offered
    task_id = (await tasks_of(ana, patient, count=2))["comprehensive medication review"]
    path = f"/tasks/{task_id}"

    page = (await ana.get(path)).text
    assert "action-plan" not in page  # nothing to preview before the review is done
    assert (await post(ana, f"{path}/claim", page)).status_code == 303
    page = (await ana.get(path)).text
    assert "CMR documentation (required)" in page and 'name="pml-0-name" size="24" value="' in page
    fields = {
        "note": "Reviewed every medication with the member.",
        "doc-performed-on": datetime.now(UTC).date().isoformat(),
        "doc-delivery-method": "telephone",
        "doc-recipient": "beneficiary",
        "doc-provider-type": "local-pharmacist",
        "prob-0-detail": "Statin stopped at discharge with no reason given",
        "prob-0-category": "needs-additional-drug-therapy",
        "prob-0-severity": "high",
        "prob-0-mitigation": "5",
        "rec-0-text": "Restart atorvastatin 40 mg daily",
        "rec-0-action": "start",
        "rec-0-ingredients": "atorvastatin",
        "rec-0-refer": "on",
        "rec-0-problem": "0",
        "rec-1-text": "Take the evening dose with food",
        "rec-1-action": "educate",
        "plan-0-topic": "Your cholesterol medicine",
        "plan-0-rec": "0",
        "doc-allergies": "Penicillin (rash)",
        "fu-0-due": (datetime.now(UTC) + timedelta(days=30)).date().isoformat(),
        "fu-0-reason": "Check the statin was restarted",
    }
    # A plan topic with nothing to do is refused in one line, and what was typed stays in the form.
    unread = await post(ana, f"{path}/complete", page, **fields)
    assert unread.status_code == 400
    assert error_of(unread.text).startswith("action plan 'Your cholesterol medicine': write at least one step")
    assert "Restart atorvastatin 40 mg daily" in unread.text and 'value="telephone" selected' in unread.text
    fields["plan-0-steps"] = "Ask Dr. Lee about restarting atorvastatin.\nTake it every evening."
    done = await post(ana, f"{path}/complete", unread.text, **fields)
    assert done.status_code == 303, error_of(done.text)

    async def completed():
        shown = (await ana.get(path)).text
        return shown if 'id="rec-' in shown and "map-preview" in shown else None

    page = await wait_for(completed, timeout_s=15)
    assert "counts as a CMR" in page and "telephone" in page and "needs additional drug therapy" in page
    assert "complete-form" not in page and "delivery-form" in page

    preview = await ana.get(f"{path}/action-plan")
    assert preview.status_code == 200 and preview.headers["content-type"].startswith("text/html")
    assert all(heading in preview.text for heading in ("Medication Action Plan", "Personal Medication List"))
    assert "Ask Dr. Lee about restarting atorvastatin." in preview.text
    assert "frame-ancestors 'self'" in preview.headers["content-security-policy"]
    pdf = await ana.get(f"{path}/action-plan.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"] == f'attachment; filename="action-plan-{task_id}.pdf"'
    text = " ".join(" ".join((p.extract_text() or "").split()) for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert all(heading in text for heading in STANDARD_HEADINGS) and "Penicillin (rash)" in text
    assert (await ana.get(f"/tasks/{discharge_task}/action-plan")).status_code == 404

    # The member's recommendation: its outcome as the pharmacist learnt it; the prescriber's comes from referral.
    outcome_forms = re.findall(r'<tr id="rec-[^>]*>\s*<td>([^<]+)<.*?action="([^"]+/outcome)"', page, re.S)
    forms = {text.strip(): action for text, action in outcome_forms}
    assert forms.keys() == {"Restart atorvastatin 40 mg daily", "Take the evening dose with food"}
    assert '<option value="no-response">no response</option></select>' in page  # all one may say for a prescriber
    patients_rec = forms["Take the evening dose with food"]
    recorded = await post(ana, patients_rec, page, outcome="accepted", note="Takes it with dinner now")
    assert recorded.status_code == 303 and recorded.headers["location"] == f"{path}?done=outcome-recorded"
    unknown = await post(ana, f"{path}/recommendations/{uuid.uuid4()}/outcome", page, outcome="accepted")
    assert unknown.status_code == 404 and error_of(unknown.text) == "no such recommendation"

    async def outcome_shown():
        shown = (await ana.get(path)).text
        return shown if 'data-outcome="accepted"' in shown else None

    assert "Takes it with dinner now" in await wait_for(outcome_shown, timeout_s=15)

    page = (await ana.get(path)).text
    early = await post(
        ana, f"/tasks/{discharge_task}/action-plan/delivery", page, method="mail", delivered_on="2026-01-02"
    )
    assert early.status_code == 409 and error_of(early.text) == "only a completed CMR has an action plan to deliver"
    delivered = await post(
        ana, f"{path}/action-plan/delivery", page, method="mail", delivered_on=fields["doc-performed-on"]
    )
    assert delivered.status_code == 303

    async def delivery_shown():
        shown = (await ana.get(path)).text
        return shown if 'id="delivered"' in shown else None

    assert "delivery-form" not in await wait_for(delivery_shown, timeout_s=15)
    physician = await signed_in(web, "drlee")
    assert (await physician.get(f"{path}/action-plan.pdf")).status_code == 403
    for client in (ana, physician):
        await client.aclose()
