"""The sandbox's Insight server: insight-api's REST routes and socket.io 2.4.1's
Engine.IO v3 websocket, on one port, over a SandboxNetwork.

Why the same wire protocol instead of an in-process shortcut: ``dashpay serve --sandbox``
must run the daemon's real Insight clients (REST and socket.io), so that what merchants
test against and what our tests and benchmarks measure is the production code path.
Everything here follows ``docs/insight-protocol.md`` §1-§4 and the captured payloads in
``fixtures/insight/``, including the awkward parts: errors are not JSON (``400 text/html
"<message>. Code:<n>"``, ``404 Not found``, ``503 <message>``), request parameters are
read the way JavaScript's ``parseInt`` and ``||`` read them, ``addrs`` given as a JSON
array crashes into express's 500 page, and a client that sends ``40`` gets a second
namespace socket that receives every event again.

Layers: ``chain.py`` renders the JSON, ``network.py`` times and fans out events,
``http.py`` moves bytes under limits, ``socketio.py`` runs each Engine.IO session; this
module routes requests and refuses the upgrades engine.io refuses.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
import time
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import trio

from dashpay.sandbox.chain import INSIGHT_VERSION, RPC_INVALID_ADDRESS_OR_KEY, SandboxError
from dashpay.sandbox.http import (
    HttpRequest,
    HttpResponse,
    WebSocket,
    WebSocketSession,
    serve_tcp,
)
from dashpay.sandbox.network import DEFAULT_MAX_BUFFER, SandboxNetwork
from dashpay.sandbox.socketio import EngineSession
from dashpay.wire import engineio as eio

log = logging.getLogger(__name__)

# --- constants, each with its reason ----------------------------------------------------

SOCKET_IO_PATH = "/socket.io/"  # socket.io's default path; it never carries the prefix
# Heartbeat values a caller may configure (ms): the bounds the daemon's Engine.IO codec
# accepts in an open packet; engine.io's own defaults are 25000 and 5000/20000; tests
# use tens of milliseconds.
MIN_HEARTBEAT_MS = eio.MIN_HEARTBEAT_MS
MAX_HEARTBEAT_MS = eio.MAX_HEARTBEAT_MS
# Number of addresses a JSON body may name before we stop splitting: the chain refuses
# more than 10,000 anyway (dashcore-node's maxAddressesQuery); this bounds the work.
MAX_ADDRS_SPLIT = 100_000

# express's query and urlencoded parsers (qs) keep the first 1000 parameters.
QS_PARAMETER_LIMIT = 1000
# Digits of a request integer we convert exactly; longer ones (a hostile "from" with
# thousands of digits) stand for a number too big to matter, like JavaScript's 1e+30.
MAX_INT_DIGITS = 18
JS_HUGE = 10**18

# engine.io 3's error codes and messages (Server.errors / Server.errorMessages).
EIO_UNKNOWN_TRANSPORT = 0
EIO_UNKNOWN_SID = 1
EIO_BAD_REQUEST = 3
_EIO_MESSAGES = {0: "Transport unknown", 1: "Session ID unknown", 3: "Bad request"}

_JSON = "application/json; charset=utf-8"
_HTML = "text/html; charset=utf-8"
# Headers dashcore-node's express app adds to every answer.
_COMMON_HEADERS = (
    ("X-Powered-By", "Express"),
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, HEAD, PUT, POST, OPTIONS"),
    (
        "Access-Control-Allow-Headers",
        "Origin, X-Requested-With, Content-Type, Accept, Content-Length, Cache-Control, "
        "cf-connecting-ip",
    ),
)
_SUMMARY_FIELDS = {
    "balance": "balanceSat",
    "totalreceived": "totalReceivedSat",
    "totalsent": "totalSentSat",
    "unconfirmedbalance": "unconfirmedBalanceSat",
}
_JS_INT = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|[0-9]+)")


# --- JavaScript semantics of request parameters -----------------------------------------


def js_parse_int(value: object) -> int | None:
    """JavaScript's ``parseInt(value)`` on what express hands insight-api (query strings,
    JSON values); None stands for NaN."""
    if isinstance(value, bool):
        return None  # parseInt("true") is NaN
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or (value != 0 and not 1e-6 <= abs(value) < 1e21):
            return None  # exponent notation or NaN: not worth imitating digit by digit
        return int(value)
    if isinstance(value, list):
        value = ",".join(v if isinstance(v, str) else "" for v in value)
    if not isinstance(value, str):
        return None
    match = _JS_INT.match(value)
    if match is None:
        return None
    sign, digits = match.groups()
    if len(digits) > MAX_INT_DIGITS:
        return -JS_HUGE if sign == "-" else JS_HUGE
    number = int(digits, 16) if digits[:2] in ("0x", "0X") else int(digits)
    return -number if sign == "-" else number


def _js_truthy(value: object) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, int | float):
        return value == value and value != 0
    if isinstance(value, str):
        return value != ""
    return True  # arrays and objects, even empty ones


def _query(text: str) -> dict[str, Any]:
    """A query string as express's ``qs`` gives it: repeated keys (or ``key[]``) become
    lists; everything else a string."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True)[:QS_PARAMETER_LIMIT]:
        as_list = key.endswith("[]")
        key = key[:-2] if as_list else key
        if key in out:
            previous = out[key]
            out[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[key] = [value] if as_list else value
    return out


class _BadBody(Exception):
    def __init__(self, response: HttpResponse) -> None:
        self.response = response


def _body(request: HttpRequest) -> Any:
    """The request body as express's json + urlencoded parsers leave ``req.body``."""
    kind = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
    if not request.body:
        return {}
    if kind == "application/json" or kind.endswith("+json"):
        try:
            value = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, RecursionError):
            raise _BadBody(_express_error(400, "SyntaxError: Unexpected token in JSON")) from None
        except ValueError as exc:
            position = getattr(exc, "pos", 0)
            raise _BadBody(
                _express_error(400, f"SyntaxError: Unexpected token in JSON at position {position}")
            ) from None
        if not isinstance(value, dict | list):  # body-parser's strict mode
            raise _BadBody(_express_error(400, "SyntaxError: Unexpected token in JSON"))
        return value
    if kind == "application/x-www-form-urlencoded":
        try:
            return _query(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _BadBody(_express_error(400, "Bad Request")) from None
    return {}


# --- responses -------------------------------------------------------------------------


# A CoinGecko-shaped price route, so fiat receivers work in the sandbox without any
# traffic leaving the machine. The prices are made up and fixed: sandbox money.
SANDBOX_PRICE_PREFIX = "/sandbox-prices"
SANDBOX_PRICE_PATH = SANDBOX_PRICE_PREFIX + "/api/v3/simple/price"
SANDBOX_PRICES = {"usd": "30", "eur": "28", "gbp": "24", "chf": "27", "jpy": "4500"}


def _sandbox_price(query: dict[str, Any]) -> HttpResponse:
    wanted = str(query.get("vs_currencies", "")).lower()
    coin: dict[str, Any] = {"last_updated_at": int(time.time())}
    for currency in wanted.split(","):
        if currency in SANDBOX_PRICES:
            coin[currency] = int(SANDBOX_PRICES[currency])
    return _json({"dash": coin})


def _json(value: Any, status: int = 200) -> HttpResponse:
    body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return HttpResponse(status, body, _JSON, _COMMON_HEADERS)


def _text(status: int, message: str) -> HttpResponse:
    """insight-api's ``res.status(n).send(message)``: express sends strings as HTML."""
    return HttpResponse(status, message.encode("utf-8"), _HTML, _COMMON_HEADERS)


def _not_found() -> HttpResponse:
    return _text(404, "Not found")


def _sandbox_error(exc: SandboxError) -> HttpResponse:
    """insight-api's ``common.handleErrors``: with a code, 400 "<msg>. Code:<n>"; else 503."""
    if exc.insight_code is not None:
        return _text(400, f"{exc}. Code:{exc.insight_code}")
    return _text(503, str(exc))


def _express_error(status: int, message: str) -> HttpResponse:
    """express's default error page (finalhandler), e.g. the 500 of a crashed route."""
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Error</title>\n</head>\n<body>\n<pre>{html.escape(message)}</pre>\n"
        "</body>\n</html>\n"
    )
    headers = (
        *_COMMON_HEADERS,
        ("Content-Security-Policy", "default-src 'none'"),
        ("X-Content-Type-Options", "nosniff"),
    )
    return HttpResponse(status, page.encode("utf-8"), _HTML, headers)


def _eio_error(code: int) -> HttpResponse:
    """engine.io's answer to a request it cannot handle (here: any polling request)."""
    return HttpResponse(
        400,
        json.dumps({"code": code, "message": _EIO_MESSAGES[code]}, separators=(",", ":")).encode(),
        "application/json",
    )


# --- the app ----------------------------------------------------------------------------


class InsightApp:
    """Routes of insight-api under ``route_prefix`` and the socket.io endpoint."""

    def __init__(
        self,
        network: SandboxNetwork,
        *,
        route_prefix: str = "/insight-api",
        ping_interval_ms: int = 25000,
        ping_timeout_ms: int = 20000,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        for name, value in (
            ("ping_interval_ms", ping_interval_ms),
            ("ping_timeout_ms", ping_timeout_ms),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer number of milliseconds")
            if not MIN_HEARTBEAT_MS <= value <= MAX_HEARTBEAT_MS:
                raise ValueError(f"{name} must be {MIN_HEARTBEAT_MS}..{MAX_HEARTBEAT_MS} ms")
        prefix = route_prefix.strip("/")
        if any(c in prefix for c in "?#% ") or prefix.lower().startswith("socket.io"):
            raise ValueError(
                f"route_prefix {route_prefix!r} must be a plain path like /insight-api"
            )
        self.network = network
        self.prefix_parts = [p.lower() for p in prefix.split("/")] if prefix else []
        self.ping_interval_ms = ping_interval_ms
        self.ping_timeout_ms = ping_timeout_ms
        self.max_buffer = max_buffer

    # -- HTTP

    def handle(self, request: HttpRequest) -> HttpResponse:
        parts = urlsplit(request.target)
        path = parts.path or "/"
        if path.startswith(SOCKET_IO_PATH):
            return self._socket_io_request(_query(parts.query))
        if request.method == "OPTIONS":
            return HttpResponse(204, b"", None, _COMMON_HEADERS)
        if path == SANDBOX_PRICE_PATH:
            return _sandbox_price(_query(parts.query))
        segments = [s for s in path.split("/") if s]
        count = len(self.prefix_parts)
        if [s.lower() for s in segments[:count]] != self.prefix_parts:
            return _express_error(404, f"Cannot {request.method} {path}")
        try:
            params = [unquote(s, errors="strict") for s in segments[count:]]
        except UnicodeDecodeError:
            return _express_error(400, f"Failed to decode param '{path}'")
        try:
            return self._route(request, params, _query(parts.query))
        except _BadBody as bad:
            return bad.response
        except SandboxError as exc:
            return _sandbox_error(exc)

    def _socket_io_request(self, query: dict[str, Any]) -> HttpResponse:
        if query.get("transport") != "websocket":
            return _eio_error(EIO_UNKNOWN_TRANSPORT)  # polling is not served
        if query.get("sid"):
            return _eio_error(EIO_UNKNOWN_SID)
        return _eio_error(EIO_BAD_REQUEST)  # a websocket transport without the upgrade

    def _route(
        self, request: HttpRequest, params: list[str], query: dict[str, Any]
    ) -> HttpResponse:
        method = "GET" if request.method == "HEAD" else request.method
        chain = self.network.chain
        route = [p.lower() for p in params[:1]] + params[1:]
        n = len(route)
        if method == "GET":
            if route == ["status"]:
                q = query.get("q")
                return _json(chain.status_json(q if isinstance(q, str) else None))
            if route == ["sync"]:
                return _json(chain.sync_json())
            if route == ["version"]:
                return _json({"version": INSIGHT_VERSION})
            if n == 2 and route[0] == "tx":
                tx = chain.tx_json(route[1])
                return _not_found() if tx is None else _json(tx)
            if n == 2 and route[0] == "block":
                block = chain.block_json(route[1])
                return _not_found() if block is None else _json(block)
            if n == 2 and route[0] == "block-index":
                height = js_parse_int(route[1])
                block_hash = None if height is None else chain.block_hash_at(height)
                if block_hash is None:
                    return _text(400, "Block height out of range. Code:-8")
                return _json({"blockHash": block_hash})
            if n == 2 and route[0] == "addr":
                return self._addr(route[1], query)
            if n == 3 and route[0] == "addr" and route[2].lower() == "utxo":
                return _json(chain.utxo_json([route[1]], with_height=False))
            if n == 3 and route[0] == "addr" and route[2].lower() in _SUMMARY_FIELDS:
                summary = chain.addr_json(route[1], no_tx_list=True)
                return _json(summary[_SUMMARY_FIELDS[route[2].lower()]])
            if n == 3 and route[0] == "addrs" and route[2].lower() == "txs":
                return self._history(request, query, route[1])
            if n == 3 and route[0] == "addrs" and route[2].lower() == "utxo":
                return self._multi_utxo(request, route[1])
        elif method == "POST":
            if n == 2 and route[0] == "addrs" and route[1].lower() == "txs":
                return self._history(request, query, None)
            if n == 2 and route[0] == "addrs" and route[1].lower() == "utxo":
                return self._multi_utxo(request, None)
        # insight-api's catch-all under its prefix.
        return _json({"status": 404, "url": request.target, "error": "Not found"}, status=404)

    def _addrs(self, body: Any, path_addrs: str | None) -> list[str] | HttpResponse:
        """insight-api's ``checkAddrs``: ``req.body.addrs`` if truthy, else the path's."""
        given = body.get("addrs") if isinstance(body, dict) else None
        if _js_truthy(given):
            if not isinstance(given, str):
                return _express_error(500, "TypeError: req.body.addrs.split is not a function")
            text = given
        elif path_addrs is None:
            return _express_error(
                500, "TypeError: Cannot read properties of undefined (reading 'split')"
            )
        else:
            text = path_addrs
        return text.split(",", MAX_ADDRS_SPLIT)

    def _history(
        self, request: HttpRequest, query: dict[str, Any], path_addrs: str | None
    ) -> HttpResponse:
        body = _body(request)
        addrs = self._addrs(body, path_addrs)
        if isinstance(addrs, HttpResponse):
            return addrs
        fields = body if isinstance(body, dict) else {}
        start = js_parse_int(query.get("from")) or js_parse_int(fields.get("from")) or 0
        end = js_parse_int(query.get("to")) or js_parse_int(fields.get("to")) or start + 10
        page = self.network.chain.address_history_json(
            addrs,
            start,
            end,
            no_asm=bool(js_parse_int(query.get("noAsm"))),
            no_script_sig=bool(js_parse_int(query.get("noScriptSig"))),
            no_spent=bool(js_parse_int(query.get("noSpent"))),
        )
        return _json(page)

    def _multi_utxo(self, request: HttpRequest, path_addrs: str | None) -> HttpResponse:
        addrs = self._addrs(_body(request), path_addrs)
        if isinstance(addrs, HttpResponse):
            return addrs
        try:
            return _json(self.network.chain.utxo_json(addrs))
        except SandboxError as exc:
            if exc.insight_code == RPC_INVALID_ADDRESS_OR_KEY:
                return _json([])  # insight-api answers [] when dashd says "Invalid address"
            raise

    def _addr(self, addr: str, query: dict[str, Any]) -> HttpResponse:
        chain = self.network.chain
        no_tx_list = bool(js_parse_int(query.get("noTxList")))
        start = end = None
        if _js_truthy(query.get("from")) and _js_truthy(query.get("to")):
            start = js_parse_int(query.get("from")) or 0
            end = js_parse_int(query.get("to")) or None
        return _json(chain.addr_json(addr, no_tx_list=no_tx_list, from_=start, to=end))

    # -- websocket

    def upgrade(self, request: HttpRequest) -> HttpResponse | WebSocketSession | None:
        parts = urlsplit(request.target)
        if not parts.path.startswith(SOCKET_IO_PATH):
            return None  # engine.io ends upgrade requests for other paths unanswered
        query = _query(parts.query)
        code = None
        if query.get("transport") != "websocket":
            code = EIO_UNKNOWN_TRANSPORT
        elif query.get("sid"):
            code = EIO_UNKNOWN_SID
        if code is not None:
            message = _EIO_MESSAGES[code].encode()
            return HttpResponse(400, message, "text/html", close=True)
        return self._session

    async def _session(self, websocket: WebSocket) -> None:
        session = EngineSession(
            self.network,
            websocket,
            ping_interval_ms=self.ping_interval_ms,
            ping_timeout_ms=self.ping_timeout_ms,
            max_buffer=self.max_buffer,
        )
        await session.run()


async def serve_sandbox(
    network: SandboxNetwork,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    route_prefix: str = "/insight-api",
    ping_interval_ms: int = 25000,
    ping_timeout_ms: int = 20000,
    max_buffer: int = DEFAULT_MAX_BUFFER,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``network`` as an Insight server on ``host:port`` (0: a free port) until
    cancelled; ``task_status.started`` receives the bound port. ``max_buffer``: events a
    websocket client may fall behind before it is disconnected."""
    app = InsightApp(
        network,
        route_prefix=route_prefix,
        ping_interval_ms=ping_interval_ms,
        ping_timeout_ms=ping_timeout_ms,
        max_buffer=max_buffer,
    )
    await serve_tcp(app, host=host, port=port, task_status=task_status)
