"""The sandbox network: a SandboxChain plus the timing and event stream of a real one.

Why apart from the chain: the chain is pure state; what makes it a *network* is time (an
InstantSend lock arrives about half a second after the tx) and subscribers that receive
``tx``, ``txlock`` and ``block`` as Insight's ``inv`` stream (``docs/insight-protocol.md``
§2). ``server.py`` turns each Subscription into websocket frames.

Fan-out is built for benchmarks that push tens of thousands of events per second: an
event is encoded to its Socket.IO frame once, then offered to every subscriber's bounded
buffer without waiting. A subscriber whose buffer is full is dropped (its connection is
closed, as a real server closes a client it cannot keep up with); neither the chain nor
the other subscribers ever wait for a slow one.

Durability (``serve --sandbox``, see ``state.py``): with ``persist``, every change is saved
before it is announced or its action returns, so nothing a client was told is lost by a
restart. Saves are grouped: one save covers every change made while the previous one was
being written. Without ``persist`` (tests, benchmarks) the network lives in memory only.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import trio

from dashpay.domain.errors import DashpayError
from dashpay.sandbox.chain import SandboxChain, SandboxError, SandboxTx, dash_string
from dashpay.wire.engineio import encode_event

log = logging.getLogger(__name__)

# Default events a subscriber may fall behind before it is dropped: about half a second
# of a benchmark's flood, and far more than an interactive sandbox ever produces.
DEFAULT_MAX_BUFFER = 10_000
# How long after a payment its InstantSend lock arrives by default (mainnet: ~1-2 s).
DEFAULT_LOCK_DELAY = 0.5

EVENT_TX = "tx"
EVENT_TXLOCK = "txlock"
EVENT_BLOCK = "block"


@dataclass(frozen=True, slots=True)
class SandboxEvent:
    name: str  # EVENT_TX | EVENT_TXLOCK | EVENT_BLOCK
    payload: Any  # the tx/txlock dict, or the block hash
    frame: str  # the Socket.IO frame ``42["name",payload]``, encoded once for everyone


class Subscription:
    """One subscriber's bounded queue of events (one per socket connection).

    ``receive`` raises ``trio.EndOfChannel`` once the subscription is closed and drained;
    ``dropped`` then says whether the network closed it for falling ``max_buffer``
    events behind. Use it as a context manager, or call ``close``.
    """

    __slots__ = ("_network", "_send", "_receive", "_closed", "dropped")

    def __init__(self, network: SandboxNetwork, max_buffer: int) -> None:
        self._network = network
        self._send, self._receive = trio.open_memory_channel[SandboxEvent](max_buffer)
        self._closed = trio.Event()
        self.dropped = False

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def receive(self) -> SandboxEvent:
        return await self._receive.receive()

    def receive_nowait(self) -> SandboxEvent:
        """The next buffered event; ``trio.WouldBlock`` if none is waiting."""
        return self._receive.receive_nowait()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def close(self) -> None:
        """Stop receiving new events (buffered ones can still be read). Idempotent."""
        if not self._closed.is_set():
            self._network._unsubscribe(self)
            self._send.close()
            self._closed.set()

    def _offer(self, event: SandboxEvent) -> bool:
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            return False
        return True

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SandboxNetwork:
    """Drive a SandboxChain and publish what a real Insight would push.

    ``run`` must be running (in a nursery) for payments locked after ``lock_delay``.
    Every action checkpoints first: cancelled before it starts, it has done nothing.
    ``persist`` (run in a worker thread) saves a ``snapshot()``; ``pending_locks`` are
    (txid, silent) pairs of delayed locks not delivered yet (from a restored snapshot).
    """

    def __init__(
        self,
        chain: SandboxChain | None = None,
        *,
        lock_delay: float = DEFAULT_LOCK_DELAY,
        persist: Callable[[dict[str, Any]], None] | None = None,
        pending_locks: Iterable[tuple[str, bool]] = (),
    ) -> None:
        if isinstance(lock_delay, bool) or not isinstance(lock_delay, int | float):
            raise TypeError(f"lock_delay must be a number of seconds, got {lock_delay!r}")
        if not math.isfinite(lock_delay) or lock_delay < 0:
            raise ValueError(
                f"lock_delay must be a finite number of seconds >= 0, got {lock_delay}"
            )
        self.chain = chain if chain is not None else SandboxChain()
        self.lock_delay = float(lock_delay)
        self._subscribers: list[Subscription] = []
        # Locks due later, in due order (one delay for all, so a FIFO is sorted).
        self._due_send, self._due_receive = trio.open_memory_channel[tuple[float, str, bool]](
            math.inf
        )
        # The same locks as txid -> silent, in due order: what a snapshot keeps of them.
        self._pending_locks: dict[str, bool] = dict(pending_locks)
        self._running = False
        self._persist = persist
        self._save_lock = trio.Lock()
        self._changes = 0  # changes made so far
        self._saved = 0  # changes covered by the last save

    # -- durability

    def snapshot(self) -> dict[str, Any]:
        """The network's whole state as JSON values (``restore`` takes it back)."""
        return {
            "chain": self.chain.snapshot(),
            "pending_locks": [[txid, silent] for txid, silent in self._pending_locks.items()],
        }

    @classmethod
    def restore(cls, snapshot: Any, **options: Any) -> SandboxNetwork:
        """The network a ``snapshot`` describes; ValueError (TypeError, KeyError) if it
        does not describe one. ``options`` are the constructor's keywords."""
        chain = SandboxChain.restore(snapshot["chain"])
        pending = []
        for txid, silent in snapshot["pending_locks"]:
            if not isinstance(silent, bool) or chain.get_tx(txid) is None:
                raise ValueError(f"pending lock {txid!r}: not a tx of the chain")
            pending.append((txid, silent))
        return cls(chain, pending_locks=pending, **options)

    async def _save(self) -> None:
        """Return once every change made so far is saved: a save that starts after this
        change covers it, so a caller waits for at most one save in progress and one
        of its own. Cancelled while waiting, the change stays unsaved (and untold) until
        the next save."""
        self._changes += 1
        if self._persist is None:
            return
        wanted = self._changes
        async with self._save_lock:
            if self._saved >= wanted:
                return
            covered = self._changes
            snapshot = self.snapshot()
            await trio.to_thread.run_sync(self._persist, snapshot)
            self._saved = covered

    # -- subscribers

    def subscribe(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> Subscription:
        """A new subscriber to the ``inv`` stream (``tx``, ``txlock``, ``block``)."""
        if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
            raise ValueError(f"max_buffer must be a positive integer, got {max_buffer!r}")
        subscription = Subscription(self, max_buffer)
        self._subscribers.append(subscription)
        return subscription

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def _unsubscribe(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(subscription)

    def _publish(self, name: str, payload: Any) -> None:
        subscribers = self._subscribers
        if not subscribers:
            return
        event = SandboxEvent(name, payload, encode_event(name, payload))
        lagging = [s for s in subscribers if not s._offer(event)]
        for subscription in lagging:
            log.warning("sandbox subscriber dropped reason=buffer_full event=%s", name)
            subscription.dropped = True
            subscription.close()

    def _publish_tx(self, tx: SandboxTx, *, txlock: bool) -> None:
        if self._subscribers:
            self._publish(
                EVENT_TXLOCK if txlock else EVENT_TX, self.chain.tx_event_payload(tx, txlock=txlock)
            )

    # -- actions

    async def pay(
        self,
        outputs: Sequence[tuple[str, int]],
        *,
        lock: bool = True,
        silent: bool = False,
        extra_null_data: bool = False,
    ) -> dict[str, Any]:
        """Pay ``outputs`` ((address, duffs) pairs). Emits ``tx`` now and, with ``lock``,
        ``txlock`` after ``lock_delay`` (if the tx is still in the mempool then).
        ``silent``: visible over REST only, no event at all (to exercise rescans)."""
        await trio.lowlevel.checkpoint()
        if lock and self.lock_delay > 0 and not self._running:
            raise RuntimeError("SandboxNetwork.run() must be running to lock payments later")
        tx = self.chain.pay(outputs, extra_null_data=extra_null_data)
        locked_now = lock and self.lock_delay == 0
        if locked_now:
            self.chain.lock(tx.txid)
        elif lock:  # due even if this call is cancelled while saving: the tx exists
            self._pending_locks[tx.txid] = silent
            self._due_send.send_nowait((trio.current_time() + self.lock_delay, tx.txid, silent))
        await self._save()
        if not silent:
            self._publish_tx(tx, txlock=False)
            if locked_now:
                self._publish_tx(tx, txlock=True)
        return {
            "txid": tx.txid,
            "outputs": [
                {"address": o.address, "duffs": o.duffs, "amount": _dash_text(o.duffs)}
                for o in tx.outputs
                if o.address is not None
            ],
            "lock": lock,
            "silent": silent,
        }

    async def lock(self, txid: str) -> SandboxTx:
        """InstantSend-lock a mempool tx now and emit ``txlock`` (once per tx, as Insight
        dedupes repeated locks)."""
        await trio.lowlevel.checkpoint()
        tx = self.chain.get_tx(txid.strip().lower()) if isinstance(txid, str) else None
        already = tx is not None and self.chain.is_locked(tx.txid)
        tx = self.chain.lock(txid)
        if not already:
            await self._save()
            self._publish_tx(tx, txlock=True)
        return tx

    async def mine(self, blocks: int = 1) -> list[str]:
        """Mine ``blocks`` blocks (the first takes the mempool); one ``block`` event each."""
        await trio.lowlevel.checkpoint()
        hashes = self.chain.mine(blocks)
        await self._save()
        for block_hash in hashes:
            self._publish(EVENT_BLOCK, block_hash)
        return hashes

    async def drop(self, txid: str) -> SandboxTx:
        """Drop a mempool tx. Emits nothing: a real Insight has no event for it (§4)."""
        await trio.lowlevel.checkpoint()
        tx = self.chain.drop(txid)
        await self._save()
        return tx

    async def _lock_due(self, txid: str, silent: bool) -> None:
        self._pending_locks.pop(txid, None)
        if not self.chain.in_mempool(txid) or self.chain.is_locked(txid):
            return  # mined or dropped meanwhile, or locked by hand: nothing to announce
        tx = self.chain.lock(txid)
        await self._save()
        if not silent:
            self._publish_tx(tx, txlock=True)

    # -- the clock

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver delayed InstantSend locks until cancelled (restored ones ``lock_delay``
        after the start). On exit every subscription is closed, so the connections
        serving them end too."""
        if self._running:
            raise RuntimeError("SandboxNetwork.run() is already running")
        self._running = True
        try:
            due_restored = trio.current_time() + self.lock_delay
            for txid, silent in self._pending_locks.items():
                self._due_send.send_nowait((due_restored, txid, silent))
            task_status.started()
            async for due, txid, silent in self._due_receive:
                await trio.sleep_until(due)
                try:
                    await self._lock_due(txid, silent)
                except (SandboxError, DashpayError) as exc:
                    log.error("sandbox delayed lock failed txid=%s error=%s", txid, exc)
        finally:
            self._running = False
            for subscription in list(self._subscribers):
                subscription.close()


def _dash_text(duffs: int) -> str:
    """DASH text without trailing zeros ("1.5"), from the integer (money.format_dash's
    output, without its Decimal cost on the benchmark path)."""
    return dash_string(duffs).rstrip("0").rstrip(".")
