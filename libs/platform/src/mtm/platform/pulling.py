"""Pull requests to one JetStream consumer, answered into one callback subscription."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.client import DEFAULT_JS_SUB_PENDING_BYTES_LIMIT, DEFAULT_JS_SUB_PENDING_MSGS_LIMIT
from nats.js.errors import APIError, ServiceUnavailableError

# A pull request's answers: the end of a batch short of its size, or of a waiting pull; a heartbeat (only sent when
# asked for); anything else (409: the consumer deleted, too many pulls waiting; 503: no such consumer) refuses it.
STATUS_HEADER = "Status"
DESCRIPTION_HEADER = "Description"
NO_RESPONDERS = "503"
PULL_ENDED = ("404", "408")
HEARTBEAT = "100"
# How long past its own wait a pull's end may take to reach us before the pull is given up.
PULL_ANSWER_S = 5.0
# Taken off a pull's wait for the server's expiry, as nats-py does, so the server ends the pull before we give up.
EXPIRES_MARGIN_NS = 100_000


def refusal(status: str, description: str) -> APIError:
    """The error nats-py's fetch raises for the status (503: no such consumer, no one answers its requests)."""
    if status == NO_RESPONDERS:
        return ServiceUnavailableError()
    return APIError(code=int(status) if status.isdigit() else None, description=description)


class Puller:
    """What nats-py's `fetch` does, without its cost per message, for a reader that takes messages as fast as the
    server sends them (a rebuild).

    nats-py hands out each message of a fetch through `next_msg`: a task, a `wait_for` and a uuid per message, about
    two thirds of the client's CPU for a delivery and its ack in a loop that does nothing else (measured: 26-27 µs
    against 9 µs per message, 3 KB messages, batches of 256). Here messages arrive through a subscription callback
    into a list, and a pull ends when its batch is complete or the server says it ended. (The services' pull loops
    keep nats-py's fetch: moved onto this, their CPU per discharge did not change within the bench's noise, so the
    library's code stays.)

    One pull is outstanding at a time, each with its own reply subject, so the end of an earlier pull (a client
    that gave up before the server's answer came) cannot end a later one. A message is never dropped: one that
    arrives after its pull was given up is handed out with the next.
    """

    def __init__(self, js: JetStreamContext, stream: str, consumer: str) -> None:
        self._nc = js._nc
        # The pull request nats-py's fetch sends, under the context's API prefix (nats-py gives no public accessor
        # for it, nor for the connection above).
        self._next_subject = f"{js._prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = ""
        self._sub: Any = None
        self._pulls = 0
        self._reply = ""
        self._arrived: list[Msg] = []
        self._wanted = 0
        self._pulled: asyncio.Future[None] | None = None

    async def start(self) -> Puller:
        self._inbox = self._nc.new_inbox()
        # The limits nats-py's pull subscriptions take: what one pull brings waits there while a batch is handled.
        self._sub = await self._nc.subscribe(
            f"{self._inbox}.*",
            cb=self._on_message,
            pending_msgs_limit=DEFAULT_JS_SUB_PENDING_MSGS_LIMIT,
            pending_bytes_limit=DEFAULT_JS_SUB_PENDING_BYTES_LIMIT,
        )
        return self

    async def _on_message(self, msg: Msg) -> None:
        headers = msg.headers
        if not msg.data and headers and STATUS_HEADER in headers:
            if msg.subject != self._reply:
                return  # the end of an earlier pull, given up already
            status = headers[STATUS_HEADER]
            if status in PULL_ENDED:
                self._end_pull(None)
            elif status != HEARTBEAT:
                self._end_pull(refusal(status, headers.get(DESCRIPTION_HEADER, "")))
            return
        self._arrived.append(msg)
        self._wanted -= 1
        if self._wanted <= 0:
            self._end_pull(None)

    def _end_pull(self, error: Exception | None) -> None:
        pulled = self._pulled
        if pulled is not None and not pulled.done():
            if error is None:
                pulled.set_result(None)
            else:
                pulled.set_exception(error)

    async def pull(self, limit: int, wait_s: float | None) -> list[Msg]:
        """Up to `limit` messages: what the consumer has now (`wait_s` None), or else what arrives within `wait_s`
        (less than `limit` only once the wait is over). Messages that arrived after an earlier pull was given up
        are handed out first, without a request."""
        if self._arrived:
            return self._take()
        request: dict[str, Any] = {"batch": limit}
        if wait_s is None:
            request["no_wait"] = True
        else:
            request["expires"] = max(int(wait_s * 1_000_000_000) - EXPIRES_MARGIN_NS, EXPIRES_MARGIN_NS)
        self._pulls += 1
        self._reply = f"{self._inbox}.{self._pulls}"
        self._wanted = limit
        self._pulled = asyncio.get_running_loop().create_future()
        await self._nc.publish(self._next_subject, json.dumps(request).encode(), reply=self._reply)
        try:
            # The server ends every pull (the batch, or a status); the bound only guards against a lost answer.
            await asyncio.wait_for(self._pulled, timeout=(wait_s or 0.0) + PULL_ANSWER_S)
        except TimeoutError:
            pass
        finally:
            self._pulled = None
        return self._take()

    def _take(self) -> list[Msg]:
        taken, self._arrived = self._arrived, []
        return taken

    async def unsubscribe(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None


async def puller(js: JetStreamContext, *, stream: str, durable: str) -> Puller:
    """A started puller for an existing consumer (as `pull_subscribe_bind`, it does not look the consumer up)."""
    return await Puller(js, stream, durable).start()
