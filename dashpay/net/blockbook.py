"""The Blockbook backend: a thin trio shell around ``wire/blockbook.py`` on our own
websocket codec (``wire/websocket.py``), both halves of a chain source (``net/chain.py``).

Why its shape: a Blockbook connection holds ONE address subscription of at most 1,000
addresses (a new ``subscribeAddresses`` replaces the old). So the watched set is cut
into slices (``split_subscriptions``), one connection per slice; slice 0's connection
(the "main" one) also carries ``subscribeNewBlock`` and every request (history pages,
tx lookups, ``getInfo``). A new address joins the last slice, so only that connection
resubscribes, in full, and the changes of a burst are gathered for
``RESUBSCRIBE_DELAY`` first (one request, not one per receiver). The whole set is read
again at every connect and every ``REFRESH_SECONDS`` (receivers leave the window).

Blockbook pushes no InstantSend lock or ChainLock: ``tx`` reads
``getTransactionSpecific`` (dashd's own object with ``instantlock``/``chainlock``), and
the daemon polls its unsettled payments with it (``ChainSource.settle_poll``).
Requests are pipelined: every request waiting when the writer wakes goes out in one
write, so a poll of 1,000 payments is a few writes, not 1,000 round trips.

Each connection sends ``ping`` when it has heard nothing for ``PING_INTERVAL`` and is
dropped when nothing at all arrives ``timeout`` after that. Any connection lost means
notifications may have been missed: the daemon gets ``SocketDisconnected`` and, once
every slice is subscribed again, one ``SocketConnected`` (a rescan), as with Insight;
at start one ``SocketConnected`` comes when every slice is first subscribed (not one
per connection: each would cost a full rescan). A slice opened later for new
addresses has their history read instead. A message that is not Blockbook's shape is logged
(throttled), counted in ``events_rejected`` and dropped; it never ends the link.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import trio

from dashpay.domain.backoff import ReconnectPolicy
from dashpay.domain.observations import (
    SocketConnected,
    SocketDisconnected,
    TxObserved,
)
from dashpay.domain.throttle import ThrottledLog
from dashpay.net.blockbook_link import (
    BlockbookLink,
    BlockbookUnavailable,
    PendingAnswer,
    parse_blockbook_url,
)
from dashpay.net.insight_socket import (
    RECEIVE_BUFFER_BYTES,
    closed_by_server,
    describe_error,
    excerpt,
    is_refusal,
    open_websocket,
)
from dashpay.net.link_status import LinkStatus
from dashpay.net.outbound import Outbound, default_outbound
from dashpay.wire import blockbook as bb
from dashpay.wire import websocket as wsframe
from dashpay.wire.insight import ADDRESS
from dashpay.wire.insight_rest import show

log = logging.getLogger("dashpay.blockbook")

# A ping when a connection has been silent this long (Blockbook's server closes idle
# websockets; proxies in front of it often after 60 s).
PING_INTERVAL = 20.0
# New addresses gathered this long before the resubscription that adds them.
RESUBSCRIBE_DELAY = 0.1
# The whole watched set is read again this often (receivers leave the window).
REFRESH_SECONDS = 60.0
# History pages (one per address and page) in flight at once on the main connection.
HISTORY_CONCURRENCY = 64
CLOSE_TIMEOUT = 2.0

_NETWORK_ERRORS = (
    wsframe.HandshakeError,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
)


class BlockbookClient(LinkStatus):
    """Watcher and lookups over Blockbook's websocket API; see the module docstring.

    Status fields as ``InsightSocket``'s (``state``, ``connected_since``, ...) plus
    ``tip_height`` (from ``getInfo`` at connect and every new block) and ``connections``.
    """

    def __init__(
        self,
        websocket_url: str,
        *,
        network: str,
        timeout: float = 10.0,
        reconnect_initial: float = 1.0,
        reconnect_max: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        max_message_bytes: int = bb.MAX_MESSAGE_BYTES,
        outbound: Outbound | None = None,
    ) -> None:
        self.endpoint = parse_blockbook_url(websocket_url)
        self.network = network
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._timeout = timeout
        self._reconnect = (reconnect_initial, reconnect_max)
        self._outbound = outbound or default_outbound()  # proxies and the trust store
        self._ssl_context = ssl_context  # else the outbound's, built on first use
        self._max_message_bytes = max_message_bytes
        super().__init__()
        self.tip_height: int | None = None

        # The watched set in slices of at most 1,000: an address keeps its slice until it
        # leaves, so a resubscription never drops an address that stays (no gap).
        self._slot_of: dict[str, int] = {}
        self._members: list[dict[str, None]] = [{}]
        self._dirty: set[int] = set()
        self._fresh: list[str] = []  # added since the last resubscription
        self._all: Callable[[], Iterable[str]] | None = None
        self._connections: dict[int, BlockbookLink] = {}  # index -> live connection
        self._wanted = trio.Event()  # the watched set changed
        self._main_up = trio.Event()
        self._send: trio.MemorySendChannel | None = None
        self._nursery: trio.Nursery | None = None
        self._started: set[int] = set()
        self._ever_up: set[int] = set()  # slots subscribed at least once
        self._complete = False  # every slot has been subscribed at once
        self._rescan_owed = False  # a (re)subscription since the last SocketConnected
        self._history_limiter = trio.CapacityLimiter(HISTORY_CONCURRENCY)
        self._warn = ThrottledLog(log)

    # -- the watcher interface ----------------------------------------------------------

    @property
    def display(self) -> str:
        host = f"[{self.endpoint.host}]" if ":" in self.endpoint.host else self.endpoint.host
        scheme = "wss" if self.endpoint.tls else "ws"
        return f"{scheme}://{host}:{self.endpoint.port}{self.endpoint.resource}"

    @property
    def connections(self) -> int:
        return len(self._connections)

    def track(self, addresses: Callable[[], Iterable[str]]) -> None:
        self._all = addresses

    def watch(self, addresses: Iterable[str]) -> None:
        for address in addresses:
            self._add(address)
        if self._dirty:
            self._wanted.set()

    def _add(self, address: str) -> None:
        if address in self._slot_of:
            return
        free = (i for i, m in enumerate(self._members) if len(m) < bb.MAX_SUBSCRIBE_ADDRESSES)
        index = next(free, None)
        if index is None:
            self._members.append({})
            index = len(self._members) - 1
        self._members[index][address] = None
        self._slot_of[address] = index
        self._dirty.add(index)
        self._fresh.append(address)

    async def run(self, send: trio.MemorySendChannel) -> None:
        """Keep every slice subscribed and forward what arrives, until cancelled."""
        self._send = send
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._reload()
            self._dirty.clear()  # every slot subscribes its slice when it connects
            self._fresh.clear()  # and each connect brings a full rescan
            for index in range(len(self._members)):
                self._start_slot(index)
            nursery.start_soon(self._subscriptions)

    def _reload(self) -> None:
        """The whole watched set again: who left leaves its slice, who is new joins."""
        if self._all is None:
            return
        current = dict.fromkeys(self._all())
        for address in [a for a in self._slot_of if a not in current]:
            index = self._slot_of.pop(address)
            del self._members[index][address]
            self._dirty.add(index)
        for address in current:
            self._add(address)
        if self._dirty:
            self._wanted.set()

    def _start_slot(self, index: int) -> None:
        if index not in self._started:
            self._started.add(index)
            assert self._nursery is not None
            self._nursery.start_soon(self._slot, index)

    async def _subscriptions(self) -> None:
        """Resubscribe the slices that changed, a burst of changes at a time."""
        last_reload = trio.current_time()
        while True:
            with trio.move_on_after(REFRESH_SECONDS):
                await self._wanted.wait()
            if trio.current_time() - last_reload >= REFRESH_SECONDS:
                last_reload = trio.current_time()
                self._reload()
            await trio.sleep(RESUBSCRIBE_DELAY)
            self._wanted = trio.Event()
            dirty, self._dirty = self._dirty, set()
            fresh, self._fresh = self._fresh, []
            answers = []
            for index in sorted(dirty):
                self._start_slot(index)
                connection = self._connections.get(index)
                if connection is not None and connection.subscribed != self._slice(index):
                    answers.append(self._subscribe(connection))
            if fresh and answers:
                assert self._nursery is not None
                self._nursery.start_soon(self._catch_up, fresh, answers)

    async def _catch_up(self, fresh: list[str], answers: list[PendingAnswer]) -> None:
        """A payment to a new address between its creation and its subscription is
        pushed by nobody: once subscribed, its history is read once (normally empty)
        and what it shows is forwarded like a notification."""
        with trio.move_on_after(self._timeout):
            for answer in answers:
                await answer.done.wait()
        try:
            history = await self.address_history([a for a in fresh if a in self._slot_of])
        except bb.BlockbookError as exc:
            log.warning("blockbook catch-up of %d new addresses failed: %s", len(fresh), exc)
            return
        assert self._send is not None
        for tx in history:
            await self._send.send(tx)

    def _slice(self, index: int) -> tuple[str, ...]:
        return tuple(self._members[index]) if index < len(self._members) else ()

    def _subscribe(self, connection: BlockbookLink) -> PendingAnswer:
        addresses = self._slice(connection.index)
        connection.subscribed = addresses
        request_id, pending = connection.send("subscribeAddresses", {"addresses": list(addresses)})
        # A resubscription replaces the list; notifications under the old id may still
        # be in flight: both are accepted.
        connection.subscription_ids = {*list(connection.subscription_ids)[-1:], request_id}
        return pending

    # -- one slot: a connection kept up for ever ----------------------------------------

    async def _slot(self, index: int) -> None:
        policy = ReconnectPolicy(*self._reconnect)
        down_logged = False
        while True:
            started = trio.current_time()
            connection = await self._session(index)
            now = trio.current_time()
            if connection.connected_at is not None:
                lasted = now - connection.connected_at
                delay = policy.after_drop(lasted)
                log.warning(
                    "blockbook connection %d lost url=%s reason=%r connected_for=%.1fs",
                    index,
                    self.display,
                    connection.reason,
                    lasted,
                )
                wall = time.time()
                self.link_down(wall)
                assert self._send is not None
                await self._send.send(SocketDisconnected(at=wall, reason=connection.reason or ""))
                down_logged = False
            else:
                delay = policy.after_attempt_failed(refused=connection.refused, took=now - started)
                if not down_logged:
                    log.warning(
                        "blockbook connection %d down, retrying url=%s error=%r",
                        index,
                        self.display,
                        connection.reason,
                    )
                    down_logged = True
            await trio.sleep(delay)

    async def _session(self, index: int) -> BlockbookLink:
        with trio.CancelScope() as scope:
            connection = BlockbookLink(index, scope)
            try:
                with trio.fail_after(self._timeout):
                    stream, first = await open_websocket(
                        self.endpoint, self._ssl_context, self._outbound
                    )
                connection.stream = stream
                try:
                    reader = wsframe.FrameReader(max_message_bytes=self._max_message_bytes)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._writer, connection)
                        nursery.start_soon(self._heartbeat, connection)
                        nursery.start_soon(self._subscribe_all, connection)
                        await self._read(connection, reader, first)
                        nursery.cancel_scope.cancel()
                finally:
                    self._lost(connection)
                    await trio.aclose_forcefully(stream)
            except _NETWORK_ERRORS as exc:
                connection.reason = connection.reason or describe_error(exc, self._timeout)
                connection.refused = connection.stream is None and is_refusal(exc)
        self._lost(connection)
        return connection

    def _lost(self, connection: BlockbookLink) -> None:
        connection.fail_all(connection.reason or "connection ended")
        if self._connections.get(connection.index) is connection:
            del self._connections[connection.index]
            if connection.index == 0:
                self._main_up = trio.Event()

    async def _subscribe_all(self, connection: BlockbookLink) -> None:
        """After the upgrade: the slice's addresses (and, on the main connection, new
        blocks and the tip), then tell the engine (a rescan follows)."""
        self._connections[connection.index] = connection
        waits = [self._subscribe(connection)] if self._slice(connection.index) else []
        if connection.index == 0:
            request_id, pending = connection.send("subscribeNewBlock", {})
            connection.block_id = request_id
            waits.append(pending)
            info = connection.send("getInfo", {})[1]
        try:
            with trio.fail_after(self._timeout):
                for pending in waits:
                    await pending.done.wait()
                    if pending.error is not None:
                        raise pending.error
                    if not bb.parse_subscribed(bb.result(bb.Message("", pending.data))):
                        raise bb.BlockbookMalformed("subscription answer says not subscribed")
        except trio.TooSlowError:
            connection.end("no subscription answer in time")
            return
        except bb.BlockbookError as exc:
            connection.end(f"subscription refused: {exc}")
            return
        if connection.index == 0:
            self._main_up.set()
            with trio.move_on_after(self._timeout):
                await info.done.wait()
                try:
                    self.tip_height = bb.parse_info(bb.result(bb.Message("", info.data)))
                except bb.BlockbookError as exc:
                    self._reject("getInfo answer", str(exc), info.data)
        connection.connected_at = trio.current_time()
        wall = time.time()
        log.info(
            "blockbook connection %d subscribed url=%s addresses=%d",
            connection.index,
            self.display,
            len(connection.subscribed),
        )
        # One rescan when the whole set is first subscribed, and one after each
        # reconnect (notifications were missed) once every slice is up again; a slice
        # opened later for new addresses only needs their history read.
        if connection.index in self._ever_up or not self._complete:
            self._rescan_owed = True
        elif connection.subscribed:
            assert self._nursery is not None
            self._nursery.start_soon(self._catch_up, list(connection.subscribed), [])
        self._ever_up.add(connection.index)
        if all(i in self._connections for i in self._started):
            self.link_up(wall)
            self._complete = True
            if self._rescan_owed:
                self._rescan_owed = False
                assert self._send is not None
                await self._send.send(SocketConnected(at=wall))

    async def _writer(self, connection: BlockbookLink) -> None:
        """Every text waiting goes out in one write."""
        assert connection.stream is not None
        while True:
            await connection.wake_writer.wait()
            connection.wake_writer = trio.Event()
            frames, connection.outbox = connection.outbox, []
            if not frames:
                continue
            data = b"".join(frames)
            try:
                await connection.stream.send_all(data)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                connection.end(f"send failed: {describe_error(exc, 0)}")
                return

    async def _heartbeat(self, connection: BlockbookLink) -> None:
        while True:
            silent = trio.current_time() - connection.last_heard
            if silent >= PING_INTERVAL + self._timeout:
                connection.end(f"nothing received for {silent:.0f}s (ping unanswered)")
                return
            if silent >= PING_INTERVAL:
                connection.send("ping", {})
                await trio.sleep(self._timeout)
            else:
                await trio.sleep(PING_INTERVAL - silent)

    async def _read(
        self, connection: BlockbookLink, reader: wsframe.FrameReader, data: bytes
    ) -> None:
        assert connection.stream is not None
        while True:
            if data:
                connection.last_heard = trio.current_time()
                delivered = self.events_received
                for message in reader.receive_data(data):
                    if type(message) is str:
                        await self._on_text(connection, message)
                        continue
                    if not await self._on_control(connection, reader, message):
                        return
                if self.events_received != delivered:
                    self.last_event_at = time.time()
            try:
                data = await connection.stream.receive_some(RECEIVE_BUFFER_BYTES)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                connection.end(describe_error(exc, self._timeout))
                return
            if not data:
                connection.end("server closed the connection without a websocket close frame")
                return

    async def _on_control(
        self, connection: BlockbookLink, reader: wsframe.FrameReader, message: object
    ) -> bool:
        kind = type(message)
        if kind is wsframe.PingReceived:
            connection.queue(reader.data_to_send())  # the pong the reader queued
            return True
        if kind is wsframe.PongReceived:
            return True
        if kind is wsframe.BinaryMessage:
            self._reject("binary frame", "Blockbook sends text frames only", message.data)
            return True
        reason = (
            closed_by_server(message)
            if kind is wsframe.CloseReceived
            else f"websocket protocol error: {message.reason} (close {message.code})"
        )
        connection.queue(reader.data_to_send())  # our close frame, best effort
        with trio.move_on_after(CLOSE_TIMEOUT):
            while connection.outbox:
                await trio.sleep(0.01)
        connection.end(reason)
        return False

    async def _on_text(self, connection: BlockbookLink, text: str) -> None:
        """One message: an answer, an address notification or a new block."""
        try:
            message = bb.parse_message(text)
        except bb.BlockbookMalformed as exc:
            self._reject("message", str(exc), text)
            return
        pending = connection.pending.pop(message.id, None)
        if pending is not None:
            pending.data = message.data
            pending.done.set()
            return
        try:
            if message.id in connection.subscription_ids:
                address, tx = bb.parse_address_notification(message.data)
                value: Any = tx
            elif message.id == connection.block_id:
                block = bb.parse_new_block(message.data)
                self.tip_height = block.height
                value = block.observation()
            else:
                self._reject("message", f"id {show(message.id)} answers nothing we asked", text)
                return
        except bb.BlockbookMalformed as exc:
            self._reject("notification", str(exc), text)
            return
        assert self._send is not None
        self.events_received += 1
        try:
            self._send.send_nowait(value)
        except trio.WouldBlock:
            await self._send.send(value)  # back-pressure: we stop reading meanwhile

    def _reject(self, what: str, reason: str, data: object) -> None:
        """Count and drop a message; one warning per kind per second (the rest counted
        in the next line), so a hostile server cannot flood the journal."""
        self.events_rejected += 1
        self._warn.warning(
            what, "blockbook skipped %s reason=%r data=%s", what, reason, excerpt(data)
        )

    # -- the lookups interface ----------------------------------------------------------

    async def _request(self, method: str, params: dict[str, Any]) -> Any:
        """One request on the main connection; its answer's data (errors raised)."""
        with trio.move_on_after(self._timeout):
            await self._main_up.wait()
        connection = self._connections.get(0)
        if connection is None or not self._main_up.is_set():
            raise BlockbookUnavailable(f"Blockbook {method}: not connected ({self.display})")
        _, pending = connection.send(method, params)
        with trio.move_on_after(self._timeout):
            await pending.done.wait()
        if not pending.done.is_set():
            raise BlockbookUnavailable(f"Blockbook {method}: no answer within {self._timeout:g}s")
        if pending.error is not None:
            raise pending.error
        return bb.result(bb.Message("", pending.data))

    async def tx(self, txid: str) -> TxObserved | None:
        """``getTransactionSpecific``: dashd's object, with ``instantlock`` (InstantSend
        or ChainLock) and ``confirmations``; None for an unknown txid."""
        try:
            data = await self._request("getTransactionSpecific", {"txid": txid})
        except bb.BlockbookRejected as exc:
            if bb.is_not_found(exc):
                return None
            raise
        verbose = bb.parse_tx_specific(data, self.network)
        if verbose.observed.txid != txid.lower():
            raise bb.BlockbookMalformed(f"getTransactionSpecific {txid}: answered another tx")
        return verbose.observed

    async def best_height(self) -> int | None:
        return bb.parse_info(await self._request("getInfo", {}))

    async def address_history(
        self, addresses: Sequence[str], *, skipped: set[str] | None = None
    ) -> list[TxObserved]:
        """Each address's ``getAccountInfo`` pages (``AccountPager``: paged by what was
        seen), many addresses at once. A page that is not Blockbook's shape makes that
        address's history unreadable: "" goes into ``skipped`` (no absence decided)."""
        for address in addresses:
            if not isinstance(address, str) or not ADDRESS.fullmatch(address):
                raise ValueError(f"{show(address)} is not a Dash address")
        results: dict[str, TxObserved] = {}
        failures: list[Exception] = []

        async def one(address: str) -> None:
            pager = bb.AccountPager(address)
            async with self._history_limiter:
                while (page := pager.next_page()) is not None:
                    params = {
                        "descriptor": address,
                        "details": "txs",
                        "page": page,
                        "pageSize": pager.page_size,
                    }
                    try:
                        data = await self._request("getAccountInfo", params)
                        pager.feed(data)
                    except bb.BlockbookMalformed as exc:
                        log.warning("blockbook history unreadable address=%s: %s", address, exc)
                        if skipped is not None:
                            skipped.add("")
                        return
                    except bb.BlockbookError as exc:
                        failures.append(exc)
                        return
            for tx in pager.seen.values():
                results.setdefault(tx.txid, tx)

        async with trio.open_nursery() as nursery:
            for address in dict.fromkeys(addresses):
                nursery.start_soon(one, address)
        if failures:
            raise failures[0]
        return list(results.values())
