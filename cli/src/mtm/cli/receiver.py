"""A physician's webhook endpoint for the demo: verifies the signature and shows what arrived."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mtm.contracts.webhooks import verify


class DemoReceiver:
    def __init__(self, secret: bytes, on_post: Callable[[bytes, str], None]) -> None:
        self._secret = secret
        self._on_post = on_post
        self._seen: set[str] = set()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/physicians/{{recipient_id}}/inbox"

    def start(self) -> DemoReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                webhook_id = verify(receiver._secret, body, dict(self.headers.items()))
                self.send_response(200 if webhook_id else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                # A receiver deduplicates by webhook-id: a retried delivery is acknowledged, not shown twice.
                if webhook_id and webhook_id not in receiver._seen:
                    receiver._seen.add(webhook_id)
                    receiver._on_post(body, webhook_id)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
