"""Batched direct gets: read a stream's messages on a subject filter without a consumer (nothing to ack or clean up)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from nats.aio.client import Client

READ_TIMEOUT_S = 5.0
# (stream sequence, subject, data, headers) of one message.
DirectMessage = tuple[int, str, bytes, Mapping[str, str]]


class DirectGetFailed(RuntimeError):
    """The server answered a direct get with a status other than "nothing (more) here"."""


async def direct_batch(
    nc: Client, stream: str, subject_filter: str, start: int, batch: int
) -> tuple[list[DirectMessage], bool]:
    """Up to `batch` messages from sequence `start` on the filter, and whether none are left after them."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        request = {"seq": start, "next_by_subj": subject_filter, "batch": batch}
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), reply=inbox)
        found: list[DirectMessage] = []
        pending = 0
        while True:
            msg = await sub.next_msg(timeout=READ_TIMEOUT_S)
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is not None and not msg.data:
                if status in ("404", "204"):  # nothing (more) on the filter / end of batch
                    return found, pending == 0
                raise DirectGetFailed(f"direct get failed: {status} {headers.get('Description', '')}")
            found.append((int(headers["Nats-Sequence"]), headers["Nats-Subject"], msg.data, headers))
            pending = int(headers.get("Nats-Num-Pending", "0"))
    finally:
        await sub.unsubscribe()
