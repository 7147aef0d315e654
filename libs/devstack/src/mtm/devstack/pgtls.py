"""TLS in front of the embedded Postgres, which the pgserver wheel builds without OpenSSL.

The embedded Postgres listens on a Unix socket only (in a directory only its owner may enter); this process is
its one TCP port. It speaks Postgres's own negotiation: a client's `SSLRequest` is answered `S` and the
connection becomes TLS (the server certificate from the stack's CA), then the bytes go to and from the socket,
so the SCRAM exchange is between the client and Postgres itself. A client that starts in plaintext gets
Postgres's "TLS required" error (SQLSTATE 28000) and is closed; cancel requests pass, as Postgres takes them
unencrypted too. Clients cannot tell it from a Postgres built with OpenSSL: they verify the certificate
(`sslmode=verify-full`) exactly as they do in production, where Postgres terminates TLS itself.

Run as `python -m mtm.devstack.pgtls HOST PORT SOCKET CERT KEY`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import struct
import sys

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
CHUNK = 256 * 1024


def _error(message: str) -> bytes:
    """A Postgres ErrorResponse: FATAL, SQLSTATE 28000 (invalid authorization specification)."""
    fields = b"".join(
        key + value.encode() + b"\0"
        for key, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", "28000"), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class TlsFront:
    def __init__(self, socket_path: str, context: ssl.SSLContext) -> None:
        self._socket_path = socket_path
        self._context = context

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError, TimeoutError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            header = await asyncio.wait_for(reader.readexactly(8), 30)
            length, code = struct.unpack("!ii", header)
            if code == GSSENC_REQUEST:
                writer.write(b"N")  # no GSSAPI encryption: the client goes on with an SSLRequest or gives up
                await writer.drain()
                continue
            break
        if code == CANCEL_REQUEST:
            rest = await reader.readexactly(length - 8)
            await self._forward_once(header + rest)
            return
        if code != SSL_REQUEST:
            writer.write(_error("this server accepts TLS connections only (sslmode=verify-full)"))
            await writer.drain()
            return
        writer.write(b"S")
        await writer.drain()
        await writer.start_tls(self._context)
        up_reader, up_writer = await asyncio.open_unix_connection(self._socket_path)
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    async def _forward_once(self, message: bytes) -> None:
        _, up_writer = await asyncio.open_unix_connection(self._socket_path)
        up_writer.write(message)
        await up_writer.drain()
        up_writer.close()


async def serve(host: str, port: int, socket_path: str, cert: str, key: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    front = TlsFront(socket_path, context)
    server = await asyncio.start_server(front.handle, host, port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    host, port, socket_path, cert, key = argv if argv is not None else sys.argv[1:]
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(host, int(port), socket_path, cert, key))
    else:
        uvloop.run(serve(host, int(port), socket_path, cert, key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
