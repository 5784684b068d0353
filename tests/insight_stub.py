"""A real HTTP server on 127.0.0.1 that plays an Insight REST peer for tests.

Why not an httpx MockTransport: the client's retries, timeouts, connection handling and
size limits are only exercised honestly over a socket. Why not the sandbox: tests need
to script exact failures (503 twice, then 200; a 429 with Retry-After; a 400 text/html
body) the way insight-api sends them.

Routes answer with a sequence of canned ``Reply`` values (the last one repeats) or with
a function of the request. Every request is recorded with its arrival time. Unknown
routes answer like insight-api under its prefix: 404 JSON ``{"status":404,...}``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Reply:
    status: int = 200
    body: Any = b""  # bytes/str are sent as is; anything else is JSON-encoded
    content_type: str | None = None  # default: JSON for JSON bodies, else text/plain
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    time: float  # time.monotonic() on arrival

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Request], Reply]


def text(status: int, message: str, content_type: str = "text/plain; charset=utf-8") -> Reply:
    return Reply(status, message, content_type)


class InsightStub:
    """``with InsightStub() as stub: stub.route("GET", "status", Reply(200, {...}))``."""

    def __init__(self, prefix: str = "/insight-api") -> None:
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.requests: list[Request] = []
        self._routes: dict[tuple[str, str], Handler | list[Reply]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        # A short poll interval makes shutdown() (which waits for the next poll) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return self.origin + self.prefix

    def route(self, method: str, path: str, *replies: Reply | Handler) -> None:
        """Answer ``METHOD prefix/path`` (path without the prefix, no query)."""
        key = (method.upper(), f"{self.prefix}/{path.lstrip('/')}")
        if len(replies) == 1 and callable(replies[0]):
            self._routes[key] = replies[0]
        else:
            assert replies and all(isinstance(r, Reply) for r in replies)
            self._routes[key] = list(replies)  # type: ignore[arg-type]

    def requests_to(self, method: str, path: str) -> list[Request]:
        full = f"{self.prefix}/{path.lstrip('/')}"
        with self._lock:
            return [r for r in self.requests if r.method == method.upper() and r.path == full]

    def __enter__(self) -> InsightStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _answer(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            route = self._routes.get((request.method, request.path))
            if isinstance(route, list):
                reply = route.pop(0) if len(route) > 1 else route[0]
        if route is None:
            return Reply(404, {"status": 404, "url": request.path, "error": "Not found"})
        if callable(route):
            return route(request)
        return reply

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=dict(parse_qsl(parts.query)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    time=arrived,
                )
                reply = stub._answer(request)
                if reply.delay:
                    time.sleep(reply.delay)
                if isinstance(reply.body, bytes | str):
                    payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
                    content_type = reply.content_type or "text/plain; charset=utf-8"
                else:
                    payload = json.dumps(reply.body).encode()
                    content_type = reply.content_type or "application/json; charset=utf-8"
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests); nothing to tell it

            do_GET = _serve
            do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet; requests are recorded instead

        return _Handler
