"""Who may hold a control connection: per-uid shares, eviction of the longest idle, pressure.

The control server used to refuse every connection past its limit, so one local user
holding 300 idle connections locked every other client out for as long as they liked.
Now the table of open connections decides, for each new one:

- **A share per peer uid** (the kernel's SO_PEERCRED, which a client cannot forge):
  one uid holds at most ``CONTROL_UID_SHARE_PERCENT`` of the limit. A new connection
  from a uid at its share replaces that uid's own longest-idle connection; if all of
  them are answering a request, the new one is refused. So another uid always has the
  rest of the table, however busy the heavy uid keeps its share.
- **Eviction, not refusal, when full**: the new connection replaces the longest-idle
  connection of the uid holding the most (then of the next heaviest, and so on). Only
  when every connection is answering a request is the new one refused.
- **Pressure**: from ``CONTROL_PRESSURE_PERCENT`` occupancy on, until it falls below
  ``CONTROL_PRESSURE_END_PERCENT``, idle connections get
  ``CONTROL_PRESSURE_IDLE_TIMEOUT`` instead of the usual timeouts (the server applies
  it; ``under_pressure`` says when).

"Idle" means no request is being answered: the time counts from the connection's last
answer (or its opening), and a partial line does not reset it, so trickling bytes does
not make a connection look busy. A connection with unread bytes in its kernel queue is
about to start a request and is skipped when choosing whom to evict (the server's
``evictable`` probe): closing it would lose that request without an answer.

Pure bookkeeping, no sockets and no trio, fed the caller's clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from dashpay.domain.limits import (
    CONTROL_PRESSURE_END_PERCENT,
    CONTROL_PRESSURE_PERCENT,
    CONTROL_UID_SHARE_PERCENT,
    MAX_CONTROL_CONNECTIONS,
)

# The uid of a peer whose credentials the kernel did not give us (not Linux): such
# peers share one bucket.
UNKNOWN_UID = -1

# Idle connections of one uid probed for unread bytes before moving on: a hostile
# client could keep bytes in flight on many of its connections, and admission must
# stay O(1) per connection.
MAX_EVICTION_PROBES = 8


@dataclass(eq=False, slots=True)
class Seat:
    """One open connection as the table sees it."""

    number: int
    uid: int
    idle_since: float | None  # None while a request is being answered
    held: bool = False  # in the table (False once released or evicted)


@dataclass(frozen=True, slots=True)
class Verdict:
    """``admitted`` (the seat is in the table; ``evicted`` must be closed) or refused."""

    admitted: bool
    evicted: Seat | None = None
    reason: str = ""


@dataclass(slots=True)
class _Holder:
    """One uid's connections; ``idle`` in the order they went idle (oldest first)."""

    count: int = 0
    idle: dict[Seat, None] = field(default_factory=dict)


class Admission:
    """The open control connections, by uid."""

    def __init__(
        self,
        limit: int = MAX_CONTROL_CONNECTIONS,
        share_percent: int = CONTROL_UID_SHARE_PERCENT,
        pressure_percent: int = CONTROL_PRESSURE_PERCENT,
        pressure_end_percent: int = CONTROL_PRESSURE_END_PERCENT,
    ) -> None:
        self.limit = limit
        self.share = max(1, limit * share_percent // 100)
        self.pressure_at = max(1, limit * pressure_percent // 100)
        self.pressure_ends_below = min(self.pressure_at, limit * pressure_end_percent // 100)
        self.active = 0
        self.under_pressure = False
        self._holders: dict[int, _Holder] = {}

    def held_by(self, uid: int) -> int:
        holder = self._holders.get(uid)
        return holder.count if holder else 0

    def admit(self, seat: Seat, evictable: Callable[[Seat], bool]) -> Verdict:
        """Take ``seat`` (idle since its ``idle_since``), making room if needed."""
        holder = self._holders.get(seat.uid)
        evicted = None
        if holder is not None and holder.count >= self.share:
            evicted = _longest_idle(holder, evictable)
            if evicted is None:
                return Verdict(
                    False,
                    reason=f"uid {seat.uid} holds its share of {self.share} control connections "
                    "and every one is answering a request; retry shortly",
                )
        elif self.active >= self.limit:
            evicted = self._longest_idle_of_heaviest(evictable)
            if evicted is None:
                return Verdict(
                    False,
                    reason=f"the daemon is serving its maximum of {self.limit} control "
                    "connections and every one is answering a request; retry shortly",
                )
        if evicted is not None:
            self.release(evicted)
        holder = self._holders.setdefault(seat.uid, _Holder())
        holder.count += 1
        self.active += 1
        if self.active >= self.pressure_at:
            self.under_pressure = True
        seat.held = True
        if seat.idle_since is not None:
            holder.idle[seat] = None
        return Verdict(True, evicted)

    def busy(self, seat: Seat) -> None:
        """``seat`` started answering a request: it cannot be evicted until ``idle``."""
        if seat.held and seat.idle_since is not None:
            del self._holders[seat.uid].idle[seat]
        seat.idle_since = None

    def idle(self, seat: Seat, now: float) -> None:
        """``seat`` answered and waits for its next request, idle from ``now``."""
        if seat.held:
            idle = self._holders[seat.uid].idle
            idle.pop(seat, None)
            idle[seat] = None  # to the end: the most recently idle
        seat.idle_since = now

    def release(self, seat: Seat) -> None:
        """``seat`` is closed (or evicted); releasing it twice is harmless."""
        if not seat.held:
            return
        seat.held = False
        holder = self._holders[seat.uid]
        holder.idle.pop(seat, None)
        holder.count -= 1
        self.active -= 1
        if self.active < self.pressure_ends_below:
            self.under_pressure = False
        if holder.count == 0:
            del self._holders[seat.uid]

    def idle_seats(self) -> Iterator[Seat]:
        for holder in self._holders.values():
            yield from holder.idle

    def _longest_idle_of_heaviest(self, evictable: Callable[[Seat], bool]) -> Seat | None:
        for holder in sorted(self._holders.values(), key=lambda h: h.count, reverse=True):
            seat = _longest_idle(holder, evictable)
            if seat is not None:
                return seat
        return None


def _longest_idle(holder: _Holder, evictable: Callable[[Seat], bool]) -> Seat | None:
    for probes, seat in enumerate(holder.idle):
        if probes >= MAX_EVICTION_PROBES:
            return None
        if evictable(seat):
            return seat
    return None
