"""The sandbox's Socket.IO side: one Engine.IO v3 session per websocket, as socket.io
2.4.1 on dashcore-node runs it.

Why a module of its own: ``server.py`` routes HTTP requests (the REST API of insight-api,
answered synchronously from the chain model); a session is a long-lived conversation
with its own timing (heartbeat deadline, the fan-out's write batching, the slow-consumer
cut-off) and its own state (namespace sockets, the ``inv`` subscription). The frames
are the daemon's own codecs: ``wire/engineio.py`` for Engine.IO/Socket.IO packets,
``wire/websocket.py`` (through ``http.WebSocket``) for RFC 6455.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable
from typing import Any

import trio

from dashpay.sandbox.chain import SandboxError
from dashpay.sandbox.http import WS_NO_STATUS, WS_TRY_AGAIN_LATER, WebSocket, WebSocketClosed
from dashpay.sandbox.network import SandboxNetwork, Subscription
from dashpay.wire import engineio as eio

log = logging.getLogger("dashpay.sandbox.server")

# Frames written to a websocket in one go: bounds the bytes per write (~150 kB of tx
# events) while letting a flood of events cost one syscall per batch, not per event.
MAX_FRAMES_PER_WRITE = 512
# Longest an event waits for company during a burst (seconds). Writes then happen at most
# ~1000 times a second per connection however fast events come, which is what lets the
# fan-out keep up with benchmarks; 1 ms is noise next to the daemon's own latency, and an
# event arriving after a quiet spell is written at once.
FLUSH_INTERVAL = 0.001
# Socket RPC methods (dashcore-node's `message` event) the sandbox answers, with their
# parameter counts; others get "Method Not Found".
_RPC_ARGS = {"getBestBlockHash": 0, "getBestChainLock": 0, "getInfo": 0}


class _NamespaceSocket:
    """One server-side socket of the default namespace (socket.io's ``Socket``)."""

    __slots__ = ("inv",)

    def __init__(self) -> None:
        self.inv = False  # subscribed to Insight's `inv` stream


class EngineSession:
    """One Engine.IO v3 connection, as socket.io 2.4.1 runs it: open packet and ``40``
    unasked; ``2`` answered with ``3``; closed after pingInterval + pingTimeout without a
    client packet; a client ``40`` adds a namespace socket (events then arrive once per
    subscribed socket); ``41`` removes the newest one, the one packets are routed to."""

    def __init__(
        self,
        network: SandboxNetwork,
        websocket: WebSocket,
        *,
        ping_interval_ms: int,
        ping_timeout_ms: int,
        max_buffer: int,
    ) -> None:
        self.network = network
        self.ws = websocket
        self.ping_interval_ms = ping_interval_ms
        self.ping_timeout_ms = ping_timeout_ms
        self.max_buffer = max_buffer
        self.sid = secrets.token_urlsafe(15)  # 20 characters, like engine.io's base64id
        self.sockets: list[_NamespaceSocket] = []
        self.current: _NamespaceSocket | None = None
        self.copies = 0  # namespace sockets subscribed to `inv`
        self.subscription: Subscription | None = None
        self.silence = (ping_interval_ms + ping_timeout_ms) / 1000
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
                    eio.encode_open(self.sid, self.ping_interval_ms, self.ping_timeout_ms),
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
        chain = self.network.chain
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
            self.subscription = self.network.subscribe(self.max_buffer)
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
