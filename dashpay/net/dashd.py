"""The dashd backend: a merchant's own node, both halves of a chain source
(``net/chain.py``): ZMQ notifications for the watcher, JSON-RPC over HTTP for the lookups.

**ZMQ under trio, without a busy loop or a thread.** A pyzmq socket offers a file
descriptor (``zmq.FD``) that becomes readable when the socket's state changed, and
``zmq.EVENTS`` tells whether a message can be read. We wait on that FD with
``trio.lowlevel.wait_readable`` and, after each wake-up, read while ``EVENTS`` says
``POLLIN``. The FD is edge-triggered: it is signalled once per change, and a change can
be consumed by any call on the socket (even a send or a ``getsockopt``), so ``EVENTS`` is
asked again before every wait, never after a wake-up only. Why not a worker thread
feeding a channel: it would cost a thread switch per message and a second owner of the
socket (ZMQ sockets are not thread-safe), and cancellation would need a wake-up pipe;
the FD is what pyzmq's own asyncio integration waits on. The socket's monitor (a PAIR
socket, read the same way) reports the TCP link: connected (the ZMTP handshake done,
so our subscriptions are on their way) and disconnected. libzmq reconnects by itself
(``RECONNECT_IVL`` .. ``RECONNECT_IVL_MAX``: ``reconnect_initial`` .. ``reconnect_max``).

**Missed messages mean a rescan.** PUB/SUB drops what a subscriber cannot take and
what is published while the link is down, and dashd's per-topic sequence counters
restart with dashd (``wire/zmq_dashd.py`` ``SequenceTracker``, never reset here, so the
first message after a reconnect shows what was missed meanwhile). The daemon gets
``SocketConnected`` (a rescan of the watched set) after every (re)connect, once the RPC
answered ``getblockchaininfo`` on the right network, and ``SocketDisconnected`` +
``SocketConnected`` on a sequence gap or restart. Topics (``SUBSCRIBE``): ``rawtx`` (with
ZMQ's prefix match also ``rawtxlock`` and ``rawtxlocksig``: a tx with its lock),
``hashtxlock`` (a lock by txid: the tx seen as ``rawtx`` is sent again as locked, an
unknown one is read over RPC), ``hashblock`` and ``hashchainlock`` (a ``BlockObserved``:
the daemon reads the confirmations and locks of its unsettled payments back).

**RPC** (``net/dashd_rpc.py``, ``DashdRpc``: the lookups) goes through the project's
HTTP/1.1 client and ``[network] proxy`` like every other client; ZMQ cannot (it
connects directly). What the fallback without ``-addressindex`` cannot see: there.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import trio

from dashpay.domain.backoff import ReconnectPolicy
from dashpay.domain.observations import (
    BlockObserved,
    SocketConnected,
    SocketDisconnected,
    TxObserved,
)
from dashpay.domain.throttle import ThrottledLog
from dashpay.net.dashd_rpc import (
    DashdAuthError,
    DashdError,
    DashdRpc,
    WrongNetwork,
    check_zmq_url,
)
from dashpay.net.insight_socket import excerpt
from dashpay.net.link_status import LinkStatus
from dashpay.net.outbound import Outbound
from dashpay.wire import zmq_dashd as zmqwire

log = logging.getLogger("dashpay.dashd")

# After the ZMTP handshake our subscriptions still travel to dashd: the SocketConnected
# (and its rescan) waits this long, so a payment published meanwhile is in the rescan.
SUBSCRIBE_SETTLE = 0.2
# Txids remembered from rawtx, so that a hashtxlock can be sent with the tx's outputs.
SEEN_TXS = 50_000
# hashtxlock of txs never seen: looked up over RPC, at most this many at once (the rest
# dropped: a rescan reads locks too).
LOCK_LOOKUPS = 16
# Messages read in a row before the reader lets other tasks run.
READ_BURST = 256


class DashdClient(DashdRpc, LinkStatus):
    """Watcher (ZMQ) and lookups (RPC) of one dashd; see the module docstring.

    Status fields as the other watchers' plus ``tip_height`` and ``address_index``
    (None until known, then whether dashd has ``-addressindex``)."""

    def __init__(
        self,
        rpc_url: str,
        zmq_url: str,
        *,
        network: str,
        cookie_file: Path | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        reconnect_initial: float = 1.0,
        reconnect_max: float = 60.0,
        outbound: Outbound | None = None,
    ) -> None:
        DashdRpc.__init__(
            self,
            rpc_url,
            network=network,
            cookie_file=cookie_file,
            user=user,
            password=password,
            timeout=timeout,
            outbound=outbound,
        )
        LinkStatus.__init__(self)
        self.zmq_url = check_zmq_url(zmq_url)
        self._reconnect = (reconnect_initial, reconnect_max)
        self._sequence = zmqwire.SequenceTracker()
        self._seen: OrderedDict[str, TxObserved] = OrderedDict()
        self._lock_lookups = trio.CapacityLimiter(LOCK_LOOKUPS)
        self._send: trio.MemorySendChannel | None = None
        self._nursery: trio.Nursery | None = None
        self._verified = False  # the RPC answered on the right network since the connect
        self._linked = False  # the ZMQ link is up
        self._link_epoch = 0
        self._tip_wanted = trio.Event()
        self._warn = ThrottledLog(log)
        # Why the node is not used (refused credentials, another network...), for status.
        self.refusal: str | None = None

    # -- the watcher interface ----------------------------------------------------------

    @property
    def display(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{self._scheme}://{host}:{self._port} + {self.zmq_url}"

    def track(self, addresses: Callable[[], Iterable[str]]) -> None:
        """ZMQ sends every tx: nothing to subscribe per address."""

    def watch(self, addresses: Iterable[str]) -> None:
        """See ``track``."""

    async def run(self, send: trio.MemorySendChannel) -> None:
        """Keep the ZMQ subscription up and forward what arrives, until cancelled."""
        import zmq

        self._send = send
        context = zmq.Context.instance()
        sub = context.socket(zmq.SUB)
        monitor = None
        try:
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.RCVHWM, 100_000)
            sub.setsockopt(zmq.RECONNECT_IVL, max(1, int(self._reconnect[0] * 1000)))
            sub.setsockopt(zmq.RECONNECT_IVL_MAX, max(1, int(self._reconnect[1] * 1000)))
            # A dashd host gone silent (no FIN) is noticed within about a minute, not
            # the kernel's two hours; TCP keepalive works with every libzmq dashd ships.
            sub.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sub.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 30)
            sub.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 10)
            sub.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)
            for topic in zmqwire.SUBSCRIBE:
                sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
            monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
            sub.connect(self.zmq_url)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._read_zmq, sub, self._on_frames)
                nursery.start_soon(self._read_zmq, monitor, self._on_monitor)
                nursery.start_soon(self._tip_loop)
                nursery.start_soon(self._down_logger)
        finally:
            for socket in (monitor, sub):
                if socket is not None:
                    trio.lowlevel.notify_closing(socket.getsockopt(zmq.FD))
            if monitor is not None:
                sub.disable_monitor()
                monitor.close(linger=0)
            sub.close(linger=0)

    async def _read_zmq(self, socket: Any, handle: Callable[[list[bytes]], Any]) -> None:
        """Every message of ``socket`` into ``handle``, waiting on its edge-triggered FD
        only when ``EVENTS`` says nothing is readable (see the module docstring)."""
        import zmq

        fd = socket.getsockopt(zmq.FD)
        while True:
            burst = 0
            while socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                try:
                    frames = socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                await handle(frames)
                burst += 1
                if burst >= READ_BURST:
                    burst = 0
                    await trio.lowlevel.checkpoint()
            await trio.lowlevel.wait_readable(fd)

    async def _on_monitor(self, frames: list[bytes]) -> None:
        import zmq

        if len(frames) < 1 or len(frames[0]) < 6:
            return
        event = int.from_bytes(frames[0][:2], "little")
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._linked = True
            self._link_epoch += 1
            assert self._nursery is not None
            self._nursery.start_soon(self._verify_and_announce, self._link_epoch)
        elif event == zmq.EVENT_DISCONNECTED and self._linked:
            self._linked = False
            self._link_epoch += 1
            await self._lost("dashd closed the ZMQ connection")

    async def _lost(self, reason: str) -> None:
        was_up = self._verified
        self._verified = False
        if not was_up:
            return
        wall = time.time()
        lasted = wall - (self.connected_since or wall)
        log.warning(
            "dashd link lost url=%s reason=%r connected_for=%.1fs", self.display, reason, lasted
        )
        self.link_down(wall)
        assert self._send is not None
        await self._send.send(SocketDisconnected(at=wall, reason=reason))

    async def _verify_and_announce(self, epoch: int) -> None:
        """Once the ZMQ link is up: the RPC must answer on our network (retried until it
        does: dashd answers -28 while it starts), then a rescan (SocketConnected)."""
        policy = ReconnectPolicy(*self._reconnect)
        await trio.sleep(SUBSCRIBE_SETTLE)
        while epoch == self._link_epoch:
            started = trio.current_time()
            try:
                await self.check_network()
            except DashdError as exc:
                if self.refusal != str(exc):
                    self.refusal = str(exc)
                    level = (
                        logging.ERROR
                        if isinstance(exc, WrongNetwork | DashdAuthError)
                        else (logging.WARNING)
                    )
                    log.log(level, "dashd not usable url=%s: %s", self.display, exc)
                await trio.sleep(
                    policy.after_attempt_failed(refused=False, took=trio.current_time() - started)
                )
                continue
            break
        else:
            return
        self.refusal = None
        if self.address_index is False:
            self.address_index = None  # asked again: dashd may have been reindexed
        wall = time.time()
        self._verified = True
        self.link_up(wall)
        log.info("dashd connected url=%s tip=%s", self.display, self.tip_height)
        assert self._send is not None
        await self._send.send(SocketConnected(at=wall))

    async def _down_logger(self) -> None:
        """A dashd that never answers on ZMQ is said once, not at every retry."""
        await trio.sleep(max(self._timeout, 5.0))
        if not self._linked:
            log.warning(
                "dashd ZMQ not connected after %.0fs url=%s: check zmqpub* in dash.conf "
                "and that %s is reachable (ZMQ does not go through [network] proxy)",
                max(self._timeout, 5.0),
                self.display,
                self.zmq_url,
            )

    async def _on_frames(self, frames: list[bytes]) -> None:
        try:
            message = zmqwire.split_message(frames)
        except zmqwire.ZmqMessageError as exc:
            self._reject("message", str(exc), frames)
            return
        rescan = self._sequence.observe(message.topic, message.sequence)
        if rescan is not None and self._verified:
            what = (
                f"{rescan.missed} {rescan.topic} message(s) missed"
                if rescan.kind == zmqwire.GAP
                else f"{rescan.topic} sequence restarted at {rescan.received} (dashd restarted)"
            )
            log.warning("dashd %s: rescanning the watched set", what)
            assert self._send is not None
            wall = time.time()
            await self._send.send(SocketDisconnected(at=wall, reason=what))
            await self._send.send(SocketConnected(at=wall))
        if not self._verified:
            return  # not (yet) known to be our network; the connect's rescan covers it
        try:
            value = zmqwire.decode_notification(message, self.network)
        except zmqwire.ZmqMessageError as exc:
            self._reject(message.topic, str(exc), message.body)
            return
        self.events_received += 1
        self.last_event_at = time.time()
        kind = type(value)
        if kind is TxObserved:
            self._remember(value)
            await self._forward(value)
        elif kind is zmqwire.TxAnnounced:
            await self._announced(value)
        elif kind is BlockObserved:
            self._tip_wanted.set()
            await self._forward(value)
        elif kind is zmqwire.ChainLockObserved:
            if value.block_hash is not None:
                await self._forward(BlockObserved(block_hash=value.block_hash))
        elif kind is zmqwire.BlockContents:
            self._tip_wanted.set()
            for tx in value.txs:
                await self._forward(tx)

    def _remember(self, tx: TxObserved) -> None:
        if tx.outputs:
            self._seen[tx.txid] = tx
            if len(self._seen) > SEEN_TXS:
                self._seen.popitem(last=False)

    async def _announced(self, value: zmqwire.TxAnnounced) -> None:
        seen = self._seen.get(value.txid)
        if seen is not None:
            if value.instant_locked:
                locked = TxObserved(seen.txid, seen.outputs, True, seen.block_height)
                await self._forward(locked)
            return
        if self._lock_lookups.borrowed_tokens >= LOCK_LOOKUPS:
            return  # a burst of unknown txs: the next rescan reads their locks
        assert self._nursery is not None
        self._nursery.start_soon(self._look_up_announced, value)

    async def _look_up_announced(self, value: zmqwire.TxAnnounced) -> None:
        async with self._lock_lookups:
            try:
                tx = await self.tx(value.txid)
            except DashdError as exc:
                self._warn.warning(
                    "lock", "dashd lookup of locked tx %s failed: %s", value.txid, exc
                )
                return
        if tx is not None and tx.outputs:
            if value.instant_locked and not tx.instant_locked:
                tx = TxObserved(tx.txid, tx.outputs, True, tx.block_height, tx.confirmations)
            await self._forward(tx)

    async def _forward(self, value: Any) -> None:
        assert self._send is not None
        try:
            self._send.send_nowait(value)
        except trio.WouldBlock:
            await self._send.send(value)  # back-pressure: we stop reading meanwhile

    async def _tip_loop(self) -> None:
        """The tip for status: read after each block (coalesced) and every minute."""
        while True:
            with trio.move_on_after(60):
                await self._tip_wanted.wait()
            self._tip_wanted = trio.Event()
            # A failure: the link's own checks say it; status shows the last known tip.
            with contextlib.suppress(DashdError):
                await self.best_height()

    def _reject(self, what: str, reason: str, data: object) -> None:
        """Count and drop; one warning per kind per second (the rest counted)."""
        self.events_rejected += 1
        shown = data if not isinstance(data, list) else b"|".join(f[:64] for f in data)
        self._warn.warning(what, "dashd skipped %s reason=%r data=%s", what, reason, excerpt(shown))
