"""The checkout page's live updates: who watches which receiver, told of each change.

The engine calls ``publish`` after every committed batch (``PaymentEngine.on_recorded``:
the receiver as stored and all its payments), the receiver service after a cancel. No
watcher polls the database: a change reaches every watcher of that receiver as one
shared ``Update``, whose rendering the first watcher makes and the others reuse.

``publish`` never blocks and never fails: each watcher has a small bounded memory
channel, and a watcher whose channel is full (a client reading slower than its
receiver changes) is dropped, its stream ends and the browser reconnects (the
reconnection starts with the current state, so nothing is lost).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import trio

from dashpay.domain.errors import Unavailable
from dashpay.domain.model import Payment, Receiver, ReceiverResult

# Open event streams at once (all receivers): each costs a task, a socket and a channel
# (a few KiB). Past it a new stream is refused with 503 and Retry-After.
MAX_WATCHERS = 10_000
# Updates a watcher may have waiting: a receiver changes a few times in its life; a
# watcher that lets this many pile up is not reading and is dropped.
WATCHER_BUFFER = 8
# How soon a refused stream may try again (seconds).
FULL_RETRY_AFTER = 5


@dataclass(slots=True)
class Update:
    """One change of one receiver. ``payments`` None: not known (a cancel), the reader
    looks the receiver up itself."""

    receiver: Receiver
    payments: list[Payment] | None
    _made: dict[str, Any] = field(default_factory=dict)

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per update and ``key``, shared by every watcher of it."""
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]


@dataclass(slots=True)
class HubStats:
    published: int = 0  # updates of a watched receiver
    delivered: int = 0
    dropped: int = 0  # watchers dropped for a full channel
    refused: int = 0  # streams refused at max_watchers


class CheckoutHub:
    """Watchers per receiver id; see the module docstring. One trio thread."""

    def __init__(self, max_watchers: int = MAX_WATCHERS, buffer: int = WATCHER_BUFFER) -> None:
        self.max_watchers = max_watchers
        self.buffer = buffer
        self.stats = HubStats()
        self._watchers: dict[int, set[trio.MemorySendChannel[Update]]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def refuses(self) -> bool:
        """Whether a new watcher would be refused (counted as refused when so)."""
        if self._count < self.max_watchers:
            return False
        self.stats.refused += 1
        return True

    @contextlib.contextmanager
    def watch(self, receiver_id: int) -> Iterator[trio.MemoryReceiveChannel[Update]]:
        """A channel of ``receiver_id``'s updates for the ``with`` block; it ends
        (``EndOfChannel``) if the watcher is dropped. ``Unavailable`` when full."""
        if self._count >= self.max_watchers:
            raise Unavailable(
                f"{self._count} checkout event streams are open, the most this daemon "
                "keeps; retry shortly",
                retry_after=FULL_RETRY_AFTER,
            )
        send, receive = trio.open_memory_channel[Update](self.buffer)
        self._watchers.setdefault(receiver_id, set()).add(send)
        self._count += 1
        try:
            yield receive
        finally:
            self._forget(receiver_id, send)
            receive.close()

    def _forget(self, receiver_id: int, send: trio.MemorySendChannel[Update]) -> None:
        watchers = self._watchers.get(receiver_id)
        if watchers is None or send not in watchers:
            return
        watchers.discard(send)
        self._count -= 1
        if not watchers:
            del self._watchers[receiver_id]
        send.close()

    def publish(self, receiver: Receiver, payments: list[Payment] | None) -> None:
        """Tell ``receiver``'s watchers it changed (non-blocking)."""
        watchers = self._watchers.get(receiver.receiver_id)
        if not watchers:
            return
        self.stats.published += 1
        update = Update(receiver, payments)
        for send in list(watchers):
            try:
                send.send_nowait(update)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self.stats.dropped += 1
                self._forget(receiver.receiver_id, send)
            else:
                self.stats.delivered += 1

    def recorded(self, results: Iterable[ReceiverResult]) -> None:
        """The engine's committed batch (``PaymentEngine.on_recorded``)."""
        for result in results:
            self.publish(result.receiver, result.payments)

    def status_view(self) -> dict[str, int]:
        return {
            "watchers": self._count,
            "receivers_watched": len(self._watchers),
            "max_watchers": self.max_watchers,
            "updates": self.stats.published,
            "delivered": self.stats.delivered,
            "dropped_slow": self.stats.dropped,
            "refused_full": self.stats.refused,
        }
