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
``http.py`` moves bytes under limits; this module routes and speaks Engine.IO, using the
codec in ``dashpay.insight.eio``.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import trio

from dashpay.sandbox.chain import INSIGHT_VERSION, RPC_INVALID_ADDRESS_OR_KEY, SandboxError
from dashpay.sandbox.http import (
    WS_NO_STATUS,
    WS_TRY_AGAIN_LATER,
    HttpRequest,
    HttpResponse,
    WebSocket,
    WebSocketClosed,
    WebSocketSession,
    serve_tcp,
)
from dashpay.sandbox.network import DEFAULT_MAX_BUFFER, SandboxNetwork, Subscription
from dashpay.wire import engineio as eio

log = logging.getLogger(__name__)

# --- constants, each with its reason ----------------------------------------------------

SOCKET_IO_PATH = "/socket.io/"  # socket.io's default path; it never carries the prefix
# Frames written to a websocket in one go: bounds the bytes per write (~150 kB of tx
# events) while letting a flood of events cost one syscall per batch, not per event.
MAX_FRAMES_PER_WRITE = 512
# Longest an event waits for company during a burst (seconds). Writes then happen at most
# ~1000 times a second per connection however fast events come, which is what lets the
# fan-out keep up with benchmarks; 1 ms is noise next to the daemon's own latency, and an
# event arriving after a quiet spell is written at once.
FLUSH_INTERVAL = 0.001
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
# Socket RPC methods (dashcore-node's `message` event) the sandbox answers, with their
# parameter counts; others get "Method Not Found".
_RPC_ARGS = {"getBestBlockHash": 0, "getBestChainLock": 0, "getInfo": 0}


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
        await _EngineSession(self, websocket).run()


class _NamespaceSocket:
    """One server-side socket of the default namespace (socket.io's ``Socket``)."""

    __slots__ = ("inv",)

    def __init__(self) -> None:
        self.inv = False  # subscribed to Insight's `inv` stream


class _EngineSession:
    """One Engine.IO v3 connection, as socket.io 2.4.1 runs it: open packet and ``40``
    unasked; ``2`` answered with ``3``; closed after pingInterval + pingTimeout without a
    client packet; a client ``40`` adds a namespace socket (events then arrive once per
    subscribed socket); ``41`` removes the newest one, the one packets are routed to."""

    def __init__(self, app: InsightApp, websocket: WebSocket) -> None:
        self.app = app
        self.ws = websocket
        self.sid = secrets.token_urlsafe(15)  # 20 characters, like engine.io's base64id
        self.sockets: list[_NamespaceSocket] = []
        self.current: _NamespaceSocket | None = None
        self.copies = 0  # namespace sockets subscribed to `inv`
        self.subscription: Subscription | None = None
        self.silence = (app.ping_interval_ms + app.ping_timeout_ms) / 1000
        self.nursery: trio.Nursery | None = None
        self._handlers: dict[type, Callable[[Any], Any]] = {
            eio.PingFrame: self._on_ping,
            eio.CloseFrame: self._on_close,
            eio.ConnectFrame: self._on_connect,
            eio.DisconnectFrame: self._on_disconnect,
            eio.EventFrame: self._on_event,
        }
        self._closing = False

    async def run(self) -> None:
        self._new_socket()
        try:
            await self.ws.send_texts(
                [
                    eio.encode_open(self.sid, self.app.ping_interval_ms, self.app.ping_timeout_ms),
                    eio.encode_connect(),
                ]
            )
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await self._read()
                nursery.cancel_scope.cancel()
        except WebSocketClosed:
            pass
        finally:
            if self.subscription is not None:
                self.subscription.close()

    async def _read(self) -> None:
        deadline = trio.current_time() + self.silence
        while not self._closing:
            with trio.move_on_at(deadline) as silence:
                try:
                    message = await self.ws.receive()
                except WebSocketClosed:
                    return
            if silence.cancelled_caught:
                log.info("sandbox socket closed sid=%s reason=ping_timeout", self.sid)
                break
            deadline = trio.current_time() + self.silence  # any client packet counts
            if isinstance(message, str):
                await self._dispatch(message)
        # engine.io closes the transport like ws.close() without a code.
        await self.ws.close(WS_NO_STATUS)

    async def _dispatch(self, message: str) -> None:
        try:
            frame = eio.decode_frame(message)
        except eio.MalformedFrame as exc:
            if message.startswith("4"):
                return  # socket.io-parser errors are logged by socket.io, not fatal
            log.info("sandbox socket closed sid=%s reason=parse_error error=%s", self.sid, exc)
            self._closing = True  # engine.io closes the transport on a parse error
            return
        handler = self._handlers.get(type(frame))
        if handler is not None:
            await handler(frame)

    async def _on_ping(self, frame: eio.PingFrame) -> None:
        await self.ws.send_texts([eio.encode_pong(frame.data)])

    async def _on_close(self, frame: eio.CloseFrame) -> None:
        self._closing = True

    async def _on_connect(self, frame: eio.ConnectFrame) -> None:
        if frame.namespace != eio.DEFAULT_NAMESPACE:
            await self.ws.send_texts(
                [eio.encode_error("Invalid namespace", namespace=frame.namespace)]
            )
            return
        self._new_socket()
        await self.ws.send_texts([eio.encode_connect()])

    async def _on_disconnect(self, frame: eio.DisconnectFrame) -> None:
        if frame.namespace != eio.DEFAULT_NAMESPACE or self.current is None:
            return
        self.sockets.remove(self.current)
        self.current = None  # later packets for "/" find no socket and are ignored
        self._update_subscription()

    async def _on_event(self, frame: eio.EventFrame) -> None:
        socket = self.current
        if frame.namespace != eio.DEFAULT_NAMESPACE or socket is None:
            return
        name = frame.args[0] if frame.args else None
        if frame.name == "subscribe" and name == "inv":
            socket.inv = True
            self._update_subscription()
        elif frame.name == "unsubscribe" and name == "inv":
            socket.inv = False
            self._update_subscription()
        elif frame.name == "message" and frame.ack_id is not None:
            reply = self._rpc(frame.args[0] if frame.args else None)
            await self.ws.send_texts([eio.encode_ack(frame.ack_id, reply)])
        # Other names (dashd/addresstxid, ...) are not simulated; the real bus ignores
        # unknown names silently too.

    def _rpc(self, message: Any) -> dict[str, Any]:
        """dashcore-node's socket RPC for the few node methods the sandbox knows."""
        method = message.get("method") if isinstance(message, dict) else None
        if not isinstance(method, str) or method not in _RPC_ARGS:
            return {"error": {"message": "Method Not Found"}}
        params = message.get("params")
        count = len(params) if isinstance(params, list) else 0
        if count != _RPC_ARGS[method]:
            return {"error": {"message": f"Expected {_RPC_ARGS[method]} parameter(s)"}}
        chain = self.app.network.chain
        if method == "getBestBlockHash":
            return {"result": chain.tip_hash}
        if method == "getInfo":
            return {"result": chain.status_json("getInfo")["info"]}
        try:
            return {"result": chain.status_json("getBestChainLock")["bestchainlock"]}
        except SandboxError as exc:
            return {"error": {"message": str(exc)}}

    def _new_socket(self) -> None:
        socket = _NamespaceSocket()
        self.sockets.append(socket)
        self.current = socket

    def _update_subscription(self) -> None:
        self.copies = sum(1 for s in self.sockets if s.inv)
        if self.copies and self.subscription is None:
            self.subscription = self.app.network.subscribe(self.app.max_buffer)
            assert self.nursery is not None
            self.nursery.start_soon(self._pump, self.subscription)
        elif not self.copies and self.subscription is not None:
            self.subscription.close()
            self.subscription = None

    async def _pump(self, subscription: Subscription) -> None:
        """Forward ``subscription``'s events until it is closed: by an unsubscribe (stop
        at once, like the real bus) or by the network because we fell behind (close the
        connection: the client must reconnect and backfill over REST)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._forward, subscription)
            await subscription.wait_closed()
            nursery.cancel_scope.cancel()
        if subscription.dropped:
            log.warning("sandbox socket closed sid=%s reason=slow_consumer", self.sid)
            await self.ws.close(WS_TRY_AGAIN_LATER, "slow consumer")

    async def _forward(self, subscription: Subscription) -> None:
        last_write = -math.inf
        while True:
            try:
                frames = [(await subscription.receive()).frame]
            except trio.EndOfChannel:
                return
            # In a burst, let events gather for up to FLUSH_INTERVAL so one write carries
            # many; an event after a quiet spell goes out at once.
            wait = last_write + FLUSH_INTERVAL - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
            while len(frames) < MAX_FRAMES_PER_WRITE:
                try:
                    frames.append(subscription.receive_nowait().frame)
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            copies = self.copies
            if copies > 1:
                frames = [frame for frame in frames for _ in range(copies)]
            try:
                await self.ws.send_texts(frames)
            except WebSocketClosed:
                await self.ws.close()
                return
            last_write = trio.current_time()


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
