"""A small HTTP server per process for orchestrators and Prometheus: `/healthz`, `/readyz`, `/metrics`.

It runs on the process's own event loop (asyncio streams, no framework): an answer from `/healthz` therefore also
says the loop is not stuck. Plain GET (and HEAD), one request per connection, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from mtm.platform.logging import get_logger
from mtm.platform.metrics import CONTENT_TYPE

log = get_logger(__name__)

# (ready, what to show: the reasons when not ready)
Readiness = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
MAX_REQUEST_BYTES = 8 * 1024
READ_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 10.0
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request", 500: "Internal Server Error"}


class ProbeServer:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        ready: Readiness,
        metrics: Callable[[], Awaitable[bytes]],
    ) -> None:
        self._host = host
        self._port = port
        self._ready = ready
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host
        return f"http://{host}:{self.port}"

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self._host, self._port, limit=MAX_REQUEST_BYTES)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("health and metrics served", url=self.address, port=self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            method, _, rest = head.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].split("?", 1)[0]
            status, content_type, body = await asyncio.wait_for(self._answer(method, path), ANSWER_TIMEOUT_S)
            writer.write(
                (
                    f"HTTP/1.1 {status} {REASONS.get(status, 'Service Unavailable')}\r\n"
                    f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                    "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
                ).encode("latin-1")
                + (body if method != "HEAD" else b"")
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception as exc:
            log.warning("probe request failed", error_type=type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET only\n"
        if path == "/healthz":
            return 200, "application/json", b'{"status":"ok"}\n'
        if path == "/readyz":
            ready, details = await self._ready()
            body = json.dumps({"ready": ready, **details}).encode() + b"\n"
            return (200 if ready else 503), "application/json", body
        if path == "/metrics":
            return 200, CONTENT_TYPE, await self._metrics()
        return 404, "text/plain", b"not found: /healthz, /readyz, /metrics\n"
