"""The ASGI application of the HTTP API, generated from the command table.

Plain ASGI rather than a framework: every route is generated (``routes.py``), and what
a framework would add (its router, request object and unbounded ``body()``) is what
this surface must control itself: the body is read against ``max_body`` while it
arrives, within ``request_timeout``, and only after the API key was accepted.

Per request: CORS preflight -> endpoint (404/405) -> API key and scope (auth.py) -> a
slot of ``max_in_flight`` -> body -> handler -> JSON. Every failure is a
``DashpayError`` answered as ``{"error": {"kind", "message"}}`` with the status of its
kind (``errors.py``); an unexpected exception is logged and answered ``internal``.
The daemon never crashes for a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from dashpay.api.commands import COMMANDS, Command
from dashpay.api.http.auth import FailureLimiter, Gate, KeyService, client_address
from dashpay.api.http.errors import error_body, status_for
from dashpay.api.http.openapi import docs_page, openapi_document
from dashpay.api.http.routes import (
    Endpoint,
    Request,
    Response,
    Router,
    command_params,
    parse_route,
)
from dashpay.config.http import HttpConfig
from dashpay.domain.errors import (
    DashpayError,
    Internal,
    RequestTimeout,
    TooLarge,
    Unavailable,
)
from dashpay.domain.status import SERVING_STATES
from dashpay.wire.jsonrpc import decode_json, encode_json

log = logging.getLogger("dashpay.http")

Dispatch = Callable[[str, dict[str, Any]], Awaitable[Any]]
# A request waits this long for one of the max_in_flight slots before a 503.
SLOT_WAIT_SECONDS = 1.0
CORS_HEADERS = "authorization, content-type, idempotency-key"


def json_response(status: int, value: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, encode_json(value), headers=headers)


def error_response(exc: DashpayError) -> Response:
    headers: list[tuple[str, str]] = []
    details = dict(exc.details)
    if "allow" in details:
        headers.append(("allow", str(details["allow"])))
    if "retry_after" in details:
        headers.append(("retry-after", str(details["retry_after"])))
    if exc.kind == "unauthorized":
        headers.append(("www-authenticate", 'Bearer realm="dashpay"'))
    try:
        body = encode_json(error_body(exc.kind, exc.message, details))
    except (TypeError, ValueError):
        body = encode_json(error_body(exc.kind, exc.message))
    return Response(status_for(exc.kind), body, headers=tuple(headers))


def command_endpoints(dispatch: Dispatch, *, sandbox: bool) -> list[Endpoint]:
    """An endpoint per route of every command on the HTTP API (sandbox-only commands
    only in sandbox mode)."""
    out = []
    for command in COMMANDS.values():
        if command.sandbox_only and not sandbox:
            continue
        for spec in command.http:
            method, path = parse_route(spec)
            out.append(
                Endpoint(
                    method,
                    path,
                    _command_handler(command, dispatch),
                    command.scope,
                    command.help,
                    command,
                    command.timeout,
                )
            )
    return out


def _command_handler(command: Command, dispatch: Dispatch) -> Callable[[Request], Awaitable]:
    async def handle(request: Request) -> Response:
        body = decode_json(request.body, "the request body") if request.body.strip() else None
        params = command_params(command, request, body)
        return json_response(200, await dispatch(command.name, params))

    return handle


class HttpApp:
    """The ASGI callable. ``extra`` endpoints (the seed-compatible routes, /metrics) are
    mounted next to the generated ones and pass the same gate."""

    def __init__(
        self,
        *,
        dispatch: Dispatch,
        config: HttpConfig,
        health: Callable[[], tuple[str, list[str]]],
        keys: KeyService | None = None,
        limiter: FailureLimiter | None = None,
        sandbox: bool = False,
        extra: Iterable[Endpoint] = (),
    ) -> None:
        self.config = config
        self.health = health
        self.gate = Gate(keys, limiter)
        self.slots = trio.CapacityLimiter(config.max_in_flight)
        endpoints = [*self._fixed(), *command_endpoints(dispatch, sandbox=sandbox), *extra]
        self.router = Router(endpoints)
        self.document = openapi_document(endpoints)
        self.docs = docs_page(self.document).encode()

    def _fixed(self) -> list[Endpoint]:
        return [
            Endpoint("GET", "/health", self._health, None, "Liveness: the process answers."),
            Endpoint("GET", "/ready", self._ready, None, "Readiness: 200 when serving, else 503."),
            Endpoint("GET", "/openapi.json", self._openapi, None, "This document."),
            Endpoint("GET", "/docs", self._docs, None, "The routes as an HTML page."),
        ]

    # -- fixed pages ---------------------------------------------------------------------
    async def _health(self, request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def _ready(self, request: Request) -> Response:
        state, reasons = self.health()
        status = 200 if state in SERVING_STATES else 503
        return json_response(status, {"state": state, "ready": status == 200, "reasons": reasons})

    async def _openapi(self, request: Request) -> Response:
        return json_response(200, self.document)

    async def _docs(self, request: Request) -> Response:
        return Response(200, self.docs, "text/html; charset=utf-8")

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets: not served (hypercorn refuses the upgrade)
        started = time.monotonic()
        headers = _headers(scope)
        peer = (scope.get("client") or ("unknown", 0))[0]
        client = client_address(peer, headers, self.config)
        state = _BodyState()
        try:
            response = await self._respond(scope, receive, headers, client, state)
        except DashpayError as exc:
            response = error_response(exc)
        except Exception:
            log.exception("http request failed method=%s path=%s", scope["method"], scope["path"])
            response = error_response(Internal("a bug; the daemon logged it"))
        extra = list(response.headers) + self._cors(headers, scope["path"])
        if not state.complete(headers):
            extra.append(("connection", "close"))  # the unread body cannot be skipped
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type.encode()),
                    (b"content-length", str(len(response.body)).encode()),
                    (b"cache-control", b"no-store"),
                    *((k.encode(), v.encode()) for k, v in extra),
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})
        level = logging.WARNING if response.status >= 500 else logging.DEBUG
        log.log(
            level,
            "http %s %s status=%d client=%s ms=%.1f",
            scope["method"],
            scope["path"],
            response.status,
            client,
            (time.monotonic() - started) * 1000,
        )

    async def _respond(
        self, scope: dict, receive: Callable, headers: dict, client: str, state: _BodyState
    ) -> Response:
        method, path = scope["method"], scope["path"]
        if method == "OPTIONS" and "access-control-request-method" in headers:
            return self._preflight(headers, path)
        endpoint, values = self.router.match(method, path)
        key = None
        if endpoint.scope is not None:
            key = await self.gate.check(headers, client, endpoint.scope)
        # The body is read before a slot is taken: a slow client holds only its own
        # connection, never a slot another client's request needs.
        with trio.move_on_after(self.config.request_timeout) as reading:
            body = await state.read(receive, headers, self.config.max_body)
        if reading.cancelled_caught:
            raise RequestTimeout(
                f"the request body did not arrive within {self.config.request_timeout:g}s"
            )
        query = scope.get("query_string", b"").decode("latin-1")
        request = Request(method, path, query, headers, body, client, values, key)
        with trio.move_on_after(SLOT_WAIT_SECONDS) as waited:
            await self.slots.acquire()
        if waited.cancelled_caught:
            raise Unavailable("too many requests in flight; retry shortly", retry_after=1)
        try:
            limit = endpoint.timeout or self.config.request_timeout
            with trio.move_on_after(limit):
                return await endpoint.handler(request)
            raise Unavailable(f"{method} {path} did not finish within {limit:g}s")
        finally:
            self.slots.release()

    # -- CORS ------------------------------------------------------------------------------
    def _allowed_origin(self, headers: dict) -> str | None:
        origin = headers.get("origin")
        allowed = self.config.cors_origins
        if origin is None or not allowed:
            return None
        if "*" in allowed:
            return "*"
        return origin if origin.lower() in allowed else None

    def _cors(self, headers: dict, path: str) -> list[tuple[str, str]]:
        origin = self._allowed_origin(headers)
        if origin is None:
            return []
        return [("access-control-allow-origin", origin), ("vary", "Origin")]

    def _preflight(self, headers: dict, path: str) -> Response:
        methods = self.router.methods_at(path)
        if not methods:
            self.router.match("OPTIONS", path)  # raises not_found
        out: tuple[tuple[str, str], ...] = ()
        if self._allowed_origin(headers) is not None:
            out = (
                ("access-control-allow-methods", ", ".join(methods)),
                ("access-control-allow-headers", CORS_HEADERS),
                ("access-control-max-age", "600"),
            )
        return Response(204, b"", headers=out)


class _BodyState:
    """Reads a request body against the size limit, remembering whether all of it was
    read (a response sent before the end of the body must close the connection)."""

    def __init__(self) -> None:
        self.done = False

    def complete(self, headers: dict) -> bool:
        if self.done:
            return True
        return "transfer-encoding" not in headers and headers.get("content-length", "0") == "0"

    async def read(self, receive: Callable, headers: dict, limit: int) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TooLarge(f"the body is {declared} bytes; at most {limit} are accepted")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestTimeout("the client went away before sending its body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the body is over the {limit}-byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                self.done = True
                return b"".join(chunks)


def _headers(scope: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


async def _lifespan(receive: Callable, send: Callable) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
