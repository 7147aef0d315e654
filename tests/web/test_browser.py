"""A pharmacist and a physician at work in a real browser (headless Chromium), on real NATS, Postgres and services.

Second, a pharmacist's MTM review: she overrides an alert of a discharge's review, documents the member's CMR with a
recommendation, previews the Medication Action Plan in the page, downloads it as PDF, and records the outcome.

The worklist updates itself when a discharge arrives; the pharmacist claims and completes with a recommendation for
the prescriber; the physician sees the referral, acknowledges it and accepts it; the pharmacist's open task page
shows the outcome without a reload. Screenshots of each page go to test-artifacts/browser/ (set
MTM_README_SCREENSHOTS=1 to refresh the two in docs/screenshots/ that the README shows).
"""

from __future__ import annotations

import os
import uuid

import pytest
from support.browser import REPO_ROOT, chromium, screenshot
from support.events import mtm_enrolled, publish_event
from support.events import sample_discharge as discharge
from support.web import ACCOUNTS

from mtm.cli.demo import fhir_discharge
from mtm.contracts.subjects import DISCHARGE_INTAKE_SUBJECT

pytestmark = pytest.mark.e2e
README_SHOTS = REPO_ROOT / "docs" / "screenshots"
STEP_MS = 30_000


def readme(name: str) -> tuple:
    return (README_SHOTS / name,) if os.environ.get("MTM_README_SCREENSHOTS") else ()


async def sign_in(page, base: str, user: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill("input[name=user]", user)
    await page.fill("input[name=password]", ACCOUNTS[user][2])
    await page.click("button[type=submit]")


async def test_pharmacist_and_physician_in_the_browser(stack, web, nc):
    async with chromium() as browser:
        pharmacist = await (await browser.new_context(viewport={"width": 1366, "height": 900})).new_page()
        await sign_in(pharmacist, web.url, "ana")
        await pharmacist.wait_for_url(f"{web.url}/worklist")
        await pharmacist.wait_for_selector("body[data-live-state=connected]", timeout=STEP_MS)
        await screenshot(pharmacist, "01-worklist-empty")

        # The FHIR bundle of the demo (every kind of discrepancy, drug alerts), then two native discharges.
        payload, msg_id, bundled = fhir_discharge()
        await nc.jetstream().publish(DISCHARGE_INTAKE_SUBJECT, payload, headers={"Nats-Msg-Id": msg_id})
        patients = [bundled, *(f"p-{uuid.uuid4().hex[:10]}" for _ in range(2))]
        for patient in patients[1:]:
            await nc.jetstream().publish(DISCHARGE_INTAKE_SUBJECT, discharge(patient))
        row = f"#tasks tr:has-text('Patient/{patients[0]}')"
        await pharmacist.wait_for_selector(row, timeout=STEP_MS)  # pushed by the live stream, no reload
        for patient in patients[1:]:
            await pharmacist.wait_for_selector(f"#tasks tr:has-text('Patient/{patient}')", timeout=STEP_MS)
        assert await pharmacist.inner_text("#total") == "3"
        await pharmacist.wait_for_timeout(2100)  # let the arrival highlight fade for the picture
        await screenshot(pharmacist, "02-worklist-live", *readme("worklist.png"))

        await pharmacist.click(f"{row} a")
        await pharmacist.wait_for_selector("text=Home and discharge medications")
        await pharmacist.click("#claim")
        await pharmacist.wait_for_selector("text=Task claimed")
        await pharmacist.fill("textarea[name=note]", "Atorvastatin stopped at discharge with no documented reason.")
        await pharmacist.fill("input[name=rec-0-text]", "Restart atorvastatin 40 mg daily")
        await pharmacist.select_option("select[name=rec-0-action]", "start")
        await pharmacist.fill("input[name=rec-0-ingredients]", "atorvastatin")
        await pharmacist.select_option("select[name=rec-0-priority]", "urgent")
        await pharmacist.check("input[name=rec-0-refer]")
        await screenshot(pharmacist, "03-task-claimed", *readme("task.png"))
        await pharmacist.click("#complete")
        await pharmacist.wait_for_selector("text=Review completed")
        await pharmacist.wait_for_selector("body[data-live-state=connected]", timeout=STEP_MS)
        await pharmacist.wait_for_selector("#referrals tr[data-status=requested]", timeout=STEP_MS)
        await screenshot(pharmacist, "04-task-completed")

        physician = await (await browser.new_context(viewport={"width": 1366, "height": 900})).new_page()
        await sign_in(physician, web.url, "drlee")
        await physician.wait_for_url(f"{web.url}/referrals")
        await physician.wait_for_selector("#referrals tr.unread", timeout=STEP_MS)
        await screenshot(physician, "05-inbox", *readme("referrals.png"))
        await physician.click("#referrals tr.unread a")
        await physician.wait_for_selector("text=Alerts behind this recommendation")
        await screenshot(physician, "06-referral", *readme("referral.png"))
        await physician.click("#acknowledge")
        await physician.wait_for_selector("text=Referral acknowledged")
        await physician.check("input[value=accepted]")
        await physician.fill("textarea[name=note]", "Agreed: restarted atorvastatin 40 mg.")
        await physician.click("#answer")
        await physician.wait_for_selector("text=Your answer was sent")
        await screenshot(physician, "07-referral-answered")

        # The pharmacist's task page, open all along, shows the outcome as it happens.
        await pharmacist.wait_for_selector("#referrals tr[data-status=accepted]", timeout=STEP_MS)
        assert "restarted atorvastatin" in (await pharmacist.inner_text("#referrals")).lower()
        await screenshot(pharmacist, "08-task-outcome")

        # Another physician sees nothing of it.
        other = await (await browser.new_context()).new_page()
        await sign_in(other, web.url, "drkim")
        await other.wait_for_url(f"{web.url}/referrals")
        assert "atorvastatin" not in (await other.inner_text("main")).lower()


async def test_a_pharmacist_overrides_an_alert_and_documents_a_cmr_with_its_papers(stack, web, nc, tmp_path):
    payload, msg_id, patient = fhir_discharge()  # drug alerts to override
    await nc.jetstream().publish(DISCHARGE_INTAKE_SUBJECT, payload, headers={"Nats-Msg-Id": msg_id})
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True)
        page = await context.new_page()
        await sign_in(page, web.url, "ana")
        await page.wait_for_url(f"{web.url}/worklist")
        await page.wait_for_selector("body[data-live-state=connected]", timeout=STEP_MS)
        discharge_row = f"#tasks tr:has-text('Patient/{patient}'):has-text('post discharge review')"
        await page.wait_for_selector(discharge_row, timeout=STEP_MS)
        await publish_event(nc, mtm_enrolled(patient))  # enrolled in the MTM program: a CMR is offered
        cmr_row = f"#tasks tr:has-text('Patient/{patient}'):has-text('comprehensive medication review')"
        await page.wait_for_selector(cmr_row, timeout=STEP_MS)
        cmr_path = await page.get_attribute(f"{cmr_row} a", "href")
        assert cmr_path and cmr_path.startswith("/tasks/")

        # The discharge's review: claimed, then one alert overridden with the reason.
        await page.click(f"{discharge_row} a")
        await page.wait_for_selector("#claim")
        assert await page.locator("details.override-form").count() == 0  # not hers until she claims it
        await page.click("#claim")
        await page.wait_for_selector("text=Task claimed")
        alert = page.locator("li.alert:has(details.override-form)").first
        alert_id = await alert.get_attribute("id")
        await alert.locator("summary").click()
        await alert.locator("select[name=reason_code]").select_option("will-monitor")
        await alert.locator("input[name=reason]").fill("Confirmed with the member which one she takes; will monitor")
        await alert.locator("button[type=submit]").click()
        await page.wait_for_selector("text=Alert overridden")
        overridden = page.locator(f"#{alert_id}[data-overridden=yes]")
        await overridden.wait_for(timeout=STEP_MS)
        assert "Confirmed with the member" in await overridden.inner_text()
        await screenshot(page, "09-alert-overridden")

        # The CMR: claimed, documented with a recommendation and the member's action plan.
        await page.goto(f"{web.url}{cmr_path}")
        await page.click("#claim")
        await page.wait_for_selector("text=Task claimed")
        await page.select_option("select[name=doc-delivery-method]", "telephone")
        await page.fill("input[name=prob-0-detail]", "Misses evening doses of atorvastatin")
        await page.select_option("select[name=prob-0-category]", "adherence")
        await page.select_option("select[name=prob-0-mitigation]", "10")
        await page.fill("input[name=rec-0-text]", "Take atorvastatin with the evening meal")
        await page.select_option("select[name=rec-0-action]", "educate")
        await page.select_option("select[name=rec-0-problem]", "0")
        await page.fill("input[name=plan-0-topic]", "Remembering your cholesterol medicine")
        await page.fill("textarea[name=plan-0-steps]", "Keep the bottle next to the dinner plates.")
        await page.select_option("select[name=plan-0-rec]", "0")
        await page.fill("input[name=doc-allergies]", "Penicillin (rash)")
        await screenshot(page, "10-cmr-documented")
        await page.click("#complete")
        await page.wait_for_selector("text=Review completed")

        # Its papers, previewed in the page and downloaded as PDF.
        preview = page.frame_locator("#map-preview")
        await preview.locator("text=Remembering your cholesterol medicine").wait_for(timeout=STEP_MS)
        assert await preview.locator("h1", has_text="Medication Action Plan").count() == 1
        await screenshot(page, "11-cmr-papers")
        async with page.expect_download() as downloading:
            await page.click("#map-pdf")
        download = await downloading.value
        assert download.suggested_filename == f"action-plan-{cmr_path.removeprefix('/tasks/')}.pdf"
        saved = tmp_path / download.suggested_filename
        await download.save_as(saved)
        assert saved.read_bytes().startswith(b"%PDF")

        # What became of the recommendation, as the member told her.
        recommendation = page.locator("#recommendations tr", has_text="Take atorvastatin with the evening meal")
        await recommendation.locator("select[name=outcome]").select_option("accepted")
        await recommendation.locator("input[name=note]").fill("Has not missed a dose since")
        await recommendation.locator("button[type=submit]").click()
        await page.wait_for_selector("text=Outcome recorded")
        await page.wait_for_selector("#recommendations tr[data-outcome=accepted]", timeout=STEP_MS)
        assert "Has not missed a dose since" in await page.inner_text("#recommendations")
        await screenshot(page, "12-cmr-outcome")
