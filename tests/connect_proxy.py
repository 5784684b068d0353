"""A small HTTP proxy for the tests, run as its own process on loopback.

    python -m tests.connect_proxy --log FILE [--resolve proxied.test=127.0.0.1]
        [--auth USER:PASSWORD] [--deny HOST] [--tls CERT KEY] [--reverse PORT]

It prints ``listening PORT`` once it accepts connections, then serves
- ``CONNECT host:port`` (RFC 9110 §9.3.6): a tunnel, 200 then bytes both ways;
- absolute-form requests (``GET http://host:port/path``, what httpx sends for an http
  URL through a proxy): forwarded one per connection with ``Connection: close``.

Every request is appended to the log file as a JSON line (method, target as
``host:port``, whether its credentials matched), so a test can prove which traffic went
through the proxy and where to. ``--resolve SUFFIX=IP`` makes names under SUFFIX reach
IP (the port is kept): such names resolve nowhere but inside the proxy, as on a host
whose only way out is a proxy. ``--auth`` answers 407 without the right
``Proxy-Authorization``; ``--deny`` answers 403 for a host; ``--tls`` serves the proxy
itself over TLS (an https:// proxy). ``--reverse PORT`` is another tool in the same
shell: no proxy, every connection relayed to 127.0.0.1:PORT; with ``--tls`` it is a
TLS-terminating front for a plain test server (an https Insight or price provider
whose certificate a test CA issued).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import ssl
import sys
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024


class Proxy:
    def __init__(self, args: argparse.Namespace) -> None:
        self.log_path = args.log
        self.resolve = dict(item.split("=", 1) for item in args.resolve)
        self.auth = args.auth
        self.deny = set(args.deny)
        self.reverse = args.reverse

    def record(self, **entry: object) -> None:
        with open(self.log_path, "a") as log:
            log.write(json.dumps(entry) + "\n")

    def where(self, host: str) -> str:
        for suffix, address in self.resolve.items():
            if host == suffix or host.endswith("." + suffix):
                return address
        return host

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.reverse is not None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.reverse)
            self.record(method="RELAY", target=f"127.0.0.1:{self.reverse}", authorized=True)
            await asyncio.gather(self.pump(reader, up_writer), self.pump(up_reader, writer))
            return
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = [line.split(":", 1) for line in lines[1:] if ":" in line]
        given = next((v.strip() for k, v in headers if k.lower() == "proxy-authorization"), None)
        authorized = self.auth is None or given == "Basic " + base64.b64encode(
            self.auth.encode()
        ).decode("ascii")
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            host = host.strip("[]")
        else:
            url = urlsplit(target)
            host, port = url.hostname or "", str(url.port or 80)
        self.record(method=method, target=f"{host}:{port}", authorized=authorized)
        if not authorized:
            await self.answer(
                writer, "407 Proxy Authentication Required", "Proxy-Authenticate: Basic"
            )
            return
        if host in self.deny:
            await self.answer(writer, "403 Forbidden")
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.where(host), int(port))
        except (OSError, ValueError):
            await self.answer(writer, "502 Bad Gateway")
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(self.pump(reader, up_writer), self.pump(up_reader, writer))
        else:
            await self.forward_head(lines, headers, reader, up_writer)
            await self.closing_answer(up_reader, writer)
            await self.pump(up_reader, writer)
            up_writer.close()

    async def forward_head(self, lines, headers, reader, up_writer) -> None:
        method, target, version = lines[0].split(" ", 2)
        url = urlsplit(target)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        kept = [
            f"{k}:{v}"
            for k, v in headers
            if k.lower() not in ("proxy-authorization", "proxy-connection", "connection")
        ]
        up_writer.write(
            "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""]).encode(
                "latin-1"
            )
        )
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
        if length:
            up_writer.write(await reader.readexactly(length))
        await up_writer.drain()

    async def closing_answer(self, up_reader, writer) -> None:
        """Relay the answer's head with ``Connection: close``: one request per
        connection (the body follows as it comes, until the server closes)."""
        head = await up_reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        kept = [line for line in lines[1:] if line and not line.lower().startswith("connection:")]
        writer.write("\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1"))

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def answer(self, writer: asyncio.StreamWriter, status: str, *extra: str) -> None:
        writer.write(
            "\r\n".join(
                [f"HTTP/1.1 {status}", *extra, "Content-Length: 0", "Connection: close", "", ""]
            ).encode()
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--resolve", action="append", default=[])
    parser.add_argument("--auth")
    parser.add_argument("--deny", action="append", default=[])
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--reverse", type=int)
    args = parser.parse_args()
    context = None
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*args.tls)
    proxy = Proxy(args)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0, ssl=context, limit=MAX_HEAD)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    sys.exit(0)
