"""A real HTTP receiver for webhook tests: records every POST and answers with scripted status codes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mtm.contracts.webhooks import WEBHOOK_ID_HEADER


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str:
        """HTTP header names are case-insensitive; the server keeps them as the client sent them."""
        return next((value for key, value in self.headers.items() if key.lower() == name.lower()), "")


@dataclass
class WebhookReceiver:
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/physicians/{{recipient_id}}/inbox"

    def distinct_keys(self) -> set[str]:
        """The webhook-ids received: the notification ids, the key a receiver deduplicates retries by."""
        return {r.header(WEBHOOK_ID_HEADER) for r in self.received}


def serve(receiver: WebhookReceiver) -> Iterator[WebhookReceiver]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if len(body) != length:
                # A sender killed mid-request (the fault suite's kill -9) leaves a torn body: no delivery, as a
                # real receiver would refuse it; the sender's retry carries the same webhook-id.
                self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with lock:
                receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        # socketserver listens with a backlog of 5: a burst of deliveries would be refused at the door.
        request_queue_size = 256

    server = Server(("127.0.0.1", receiver.port), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
