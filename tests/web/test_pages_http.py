"""The web app over HTTP on real NATS, Postgres and services: who may open and do what, CSRF, sign-in limits."""

from __future__ import annotations

import uuid

import pytest
from support.events import sample_discharge as discharge
from support.jetstream import wait_for
from support.web import ACCOUNTS, csrf_of, sign_in, signed_in

from mtm.contracts.subjects import DISCHARGE_INTAKE_SUBJECT

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
