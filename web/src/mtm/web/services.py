"""The services as the web app reaches them: NATS request/reply with the shared contracts, each request carrying a
short-lived token signed for the person who asks."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import nats
from nats.aio.client import Client
from nats.errors import NoRespondersError
from pydantic import BaseModel, ValidationError

from mtm.contracts import CommandReply
from mtm.contracts.identity import Actor, bearer
from mtm.platform import metrics, tracing
from mtm.platform.identity import TokenIssuer
from mtm.platform.logging import get_logger

log = get_logger(__name__)
# A cached token is used while it has at least this long to live.
TOKEN_MARGIN_S = 60.0


class ServiceClient:
    def __init__(self, nc: Client, issuer: TokenIssuer, *, token_ttl_s: float, timeout_s: float) -> None:
        self.nc = nc
        self._issuer = issuer
        self._ttl_s = token_ttl_s
        self._timeout_s = timeout_s
        self._tokens: dict[Actor, tuple[str, float]] = {}

    def token_for(self, actor: Actor) -> str:
        cached = self._tokens.get(actor)
        now = time.monotonic()
        if cached is not None and cached[1] - now > min(TOKEN_MARGIN_S, self._ttl_s / 2):
            return cached[0]
        token = self._issuer.issue(actor, ttl=timedelta(seconds=self._ttl_s))
        self._tokens[actor] = (token, now + self._ttl_s)
        return token

    async def ask(self, actor: Actor, subject: str, body: BaseModel) -> CommandReply:
        """The service's reply; when it does not answer, an `error` reply saying so (never an exception)."""
        span = (
            tracing.start(f"request {subject}", kind=tracing.CLIENT, attributes={"messaging.destination.name": subject})
            if tracing.enabled()
            else None
        )
        with tracing.active(span):
            reply = await self._ask(actor, subject, body)
            if span is not None:
                span.set_attribute("mtm.outcome", reply.outcome)
        metrics.current().counter(
            "mtm_web_service_requests",
            "Requests the web app sent to the services, by subject and outcome.",
            ("subject", "outcome"),
        ).labels(subject, reply.outcome).inc()
        return reply

    async def _ask(self, actor: Actor, subject: str, body: BaseModel) -> CommandReply:
        try:
            reply = await self.nc.request(
                subject,
                body.model_dump_json().encode(),
                timeout=self._timeout_s,
                # The service's span continues this request's trace (nothing is added when tracing is off).
                headers={**tracing.current_headers(), **bearer(self.token_for(actor))},
            )
        except NoRespondersError:
            return CommandReply(outcome="error", message="the service is not running; try again shortly")
        except (TimeoutError, nats.errors.TimeoutError):
            return CommandReply(outcome="error", message="the service did not answer in time; try again")
        try:
            return CommandReply.model_validate_json(reply.data)
        except ValidationError:
            log.warning("unreadable reply", subject=subject)
            return CommandReply(outcome="error", message="the service answered something unreadable")

    async def wait_until(self, actor: Actor, subject: str, body: BaseModel, holds, *, timeout_s: float = 3.0):
        """Ask until `holds(reply)`, for a change that reached the log but not yet the service's tables."""
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while True:
            reply = await self.ask(actor, subject, body)
            if holds(reply) or time.monotonic() > deadline:
                return reply
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
