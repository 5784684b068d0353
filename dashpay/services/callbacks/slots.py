"""How the callback sender shares its POST slots between origins: a pure state machine
of who holds which slot, fed the time by its caller (no I/O, no clock of its own).

A slot is held from the start of a POST until its answer is in or ``[callbacks]
timeout`` cuts it off, and it cannot be taken back in between. So the danger is not an
endpoint that fails (a refusal or a 500 frees its slot in milliseconds) but one that
holds slots: a server that never answers holds each for the whole timeout, a slow one
for as long as it takes. With 16 slots and a plain cap of 12 per origin, one such
origin took 12 slots and a second the other 4, and every other merchant's callbacks
waited for their answers (up to 10 s, where 8 ms was normal). The rules:

- **Slots are earned.** An origin starts with ``SLOW_LANE_SLOTS`` and earns one more
  for each answer that comes within ``slow_after``, up to the general slots (all but
  the reserve), like TCP's slow start: a healthy endpoint reaches its share within a
  few round trips, an endpoint that never answers fast never holds more than
  ``SLOW_LANE_SLOTS``.
- **The slow lane.** An answer that takes ``slow_after`` or longer (a timeout is one),
  or a POST still in flight after ``slow_after``, puts the origin back to
  ``SLOW_LANE_SLOTS`` until it answers fast again.
- **A fair share.** No origin holds more than the general slots divided by the number
  of origins with POSTs in flight (itself counted), at least one: two busy healthy
  origins get half each, not first come first served.
- **The reserve.** ``max_in_flight // 4`` slots (at least one when there are two or
  more) are taken only when the general ones are all held, and only by an origin in
  good standing (its last answer was fast and nothing of it has been in flight for
  ``slow_after``), at most ``RESERVE_PER_ORIGIN`` each. So however the general slots
  came to be held (by endpoints that answered fast until they stopped), an origin that
  answers fast still gets a slot at once.

With the defaults (16 slots, 10 s timeout), two misbehaving endpoints hold at most 4
slots between them. What it does not promise: six or more of them (2 slots each), or
endpoints that answered fast until they all stopped at once, can fill the general
slots, and each of those can catch one reserve slot before it is known to be slow;
the rest of the reserve stays for the endpoints that answer.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

# An answer this slow (or slower) marks its origin slow: about a hundred times what a
# callback endpoint that acknowledges and queues the work needs (ms on a LAN, a few
# hundred ms across the world), and a fifth of the default 10 s timeout. Shorter
# timeouts shorten it (see ``slow_after``).
SLOW_ANSWER_SECONDS = 2.0
# Slots an origin holds until it has answered fast (and again after a slow answer):
# two, so that an endpoint answering every request but slowly still makes progress on
# two receivers at once, while two bad endpoints leave 12 of the default 16 slots.
SLOW_LANE_SLOTS = 2
# Reserve slots one origin may hold at a time: each origin that turns bad all at once
# can catch at most one of them before it is known to be slow.
RESERVE_PER_ORIGIN = 1
# Origins whose earned slots or slowness are remembered while they have nothing in
# flight; past it the idle ones are forgotten (they start again with the slow lane's
# slots, which is no more than a slow origin gets anyway).
MAX_REMEMBERED_ORIGINS = 4096


def reserve_slots(max_in_flight: int) -> int:
    """The slots only an origin in good standing may take: a quarter, at least one
    when there are two or more slots (with one slot there is nothing to share)."""
    return max(1, max_in_flight // 4) if max_in_flight > 1 else 0


def slow_after(timeout: float) -> float:
    """The answer time that makes an origin slow: ``SLOW_ANSWER_SECONDS``, or half of
    the attempt timeout when that is shorter (a timeout is always slow)."""
    return min(SLOW_ANSWER_SECONDS, timeout / 2)


@dataclass(frozen=True, slots=True)
class Slot:
    """One slot taken: by which origin, since when, and whether it is a reserve one."""

    origin: Hashable
    started: float
    reserve: bool


@dataclass(slots=True)
class _Origin:
    earned: int  # slots it may hold while in good standing
    slow: bool = False  # its last answer was slow
    started: list[float] = field(default_factory=list)  # its POSTs in flight
    reserve_held: int = 0


class SlotPolicy:
    """Who may start a POST now. ``may_start(origin, now)``, then ``start(origin,
    now)`` for the Slot, and ``finish(slot, now)`` once the answer is in (or the POST
    failed or was abandoned). ``now`` is monotonic seconds, from the caller."""

    def __init__(self, max_in_flight: int, slow_after: float) -> None:
        self.slots = max_in_flight
        self.reserve = reserve_slots(max_in_flight)
        self.general = max_in_flight - self.reserve
        self.slow_after = slow_after
        self.lane = min(SLOW_LANE_SLOTS, self.general)
        self.taken = 0
        self._general_taken = 0
        self._busy = 0  # origins with a POST in flight
        self._origins: dict[Hashable, _Origin] = {}

    @property
    def free(self) -> int:
        return self.slots - self.taken

    def in_flight(self, origin: Hashable) -> int:
        state = self._origins.get(origin)
        return len(state.started) if state else 0

    def is_slow(self, origin: Hashable, now: float) -> bool:
        """In the slow lane: its last answer was slow, or a POST of it is still in
        flight after ``slow_after``."""
        state = self._origins.get(origin)
        if state is None:
            return False
        return state.slow or bool(state.started and now - min(state.started) >= self.slow_after)

    def limit(self, origin: Hashable, now: float) -> int:
        """How many POSTs ``origin`` may have in flight now (see the module docstring)."""
        state = self._origins.get(origin)
        earned = self.lane if state is None or self.is_slow(origin, now) else state.earned
        busy = self._busy + (0 if state is not None and state.started else 1)
        return min(earned, max(1, self.general // busy))

    def may_start(self, origin: Hashable, now: float) -> bool:
        if self.taken >= self.slots:
            return False
        if self.in_flight(origin) >= self.limit(origin, now):
            return False
        return self._general_taken < self.general or self._may_take_reserve(origin, now)

    def _may_take_reserve(self, origin: Hashable, now: float) -> bool:
        state = self._origins.get(origin)
        held = state.reserve_held if state else 0
        return held < RESERVE_PER_ORIGIN and not self.is_slow(origin, now)

    def start(self, origin: Hashable, now: float) -> Slot:
        """Take a slot for ``origin`` (``may_start`` said yes)."""
        if not self.may_start(origin, now):
            raise ValueError("no slot may be taken for this origin now")
        state = self._origins.get(origin)
        if state is None:
            state = self._origins[origin] = _Origin(self.lane)
        if not state.started:
            self._busy += 1
        reserve = self._general_taken >= self.general
        if reserve:
            state.reserve_held += 1
        else:
            self._general_taken += 1
        state.started.append(now)
        self.taken += 1
        return Slot(origin, now, reserve)

    def finish(self, slot: Slot, now: float) -> bool:
        """The POST that took ``slot`` is over: the slot is free, and how long it took
        says whether its origin earns a slot or goes to the slow lane. True when this
        answer moved the origin to the slow lane (it was not there before)."""
        state = self._origins[slot.origin]
        was_slow = state.slow
        state.started.remove(slot.started)
        self.taken -= 1
        if slot.reserve:
            state.reserve_held -= 1
        else:
            self._general_taken -= 1
        if now - slot.started >= self.slow_after:
            state.slow, state.earned = True, self.lane
        else:
            state.slow, state.earned = False, min(self.general, state.earned + 1)
        if not state.started:
            self._busy -= 1
            if not state.slow and state.earned == self.lane:
                del self._origins[slot.origin]  # nothing worth remembering
            elif len(self._origins) > MAX_REMEMBERED_ORIGINS:
                self._forget_idle()
        return state.slow and not was_slow

    def _forget_idle(self) -> None:
        for origin in [o for o, state in self._origins.items() if not state.started]:
            del self._origins[origin]
