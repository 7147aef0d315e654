"""ListReferrals: what a physician's tool shows as open requests."""

from __future__ import annotations

import asyncpg

from mtm.contracts import CommandReply, ListReferrals
from mtm.contracts.subjects import LIST_REFERRALS
from mtm.platform.runtime import CommandRoute
from mtm.referral.adapters.referrals import ReferralRepository


async def handle(conn: asyncpg.Connection, query: ListReferrals) -> CommandReply:
    found = await ReferralRepository(conn).list(query.physician_id, query.status, query.limit)
    return CommandReply(outcome="accepted", message=f"{len(found)} referrals", data=found)


ROUTE = CommandRoute(subject=LIST_REFERRALS, model=ListReferrals, handle=handle, transactional=False)
