"""The stack the web app's tests run against: the four services in this event loop, and the web app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.web import RunningWeb, add_accounts, running_web, web_settings


def service_apps(settings_for, **notify: Any) -> dict[str, Any]:
    from mtm.notify.bootstrap import create_app as notify_app
    from mtm.notify.settings import NotifySettings
    from mtm.reconciliation.bootstrap import ReconciliationSettings
    from mtm.reconciliation.bootstrap import create_app as reconciliation_app
    from mtm.referral.bootstrap import create_app as referral_app
    from mtm.referral.settings import ReferralSettings
    from mtm.review.bootstrap import create_app as review_app
    from mtm.review.settings import ReviewSettings

    return {
        "reconciliation": reconciliation_app(settings_for(ReconciliationSettings)),
        "review": review_app(settings_for(ReviewSettings)),
        "referral": referral_app(settings_for(ReferralSettings, referral_escalation_check_s=0.2)),
        "notify": notify_app(settings_for(NotifySettings, notify_poll_s=0.05, **notify)),
    }


@pytest.fixture
async def stack(clean_jetstream, settings_for, run_service) -> AsyncIterator[dict[str, Any]]:
    apps = service_apps(settings_for)
    async with (
        run_service(apps["reconciliation"]),
        run_service(apps["review"]),
        run_service(apps["referral"]),
        run_service(apps["notify"]),
    ):
        yield apps


@pytest.fixture
async def web(infra) -> AsyncIterator[RunningWeb]:
    async with running_web(web_settings(infra)) as running:
        await add_accounts(running.store)
        yield running
