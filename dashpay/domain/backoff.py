"""The one retry-spacing policy: capped exponential backoff, optionally jittered.

Every loop that retries after a failure (Insight REST retries, the engine's and the
callback sender's database retries, the daemon's rescan retry, and the Insight socket's
reconnects through
``ReconnectPolicy``) waits ``min(cap, initial * 2**attempt)`` before attempt
``attempt + 1``. Loops that many daemons run against one shared server (the Insight
socket and REST) jitter that to between half and all of it, so daemons that failed
together do not come back together; the lower half-bound keeps retries from ever
becoming a tight loop. Loops against a daemon's own database do not need jitter and
keep exact doubling, which also makes their log lines predictable.

Pure (no clock, no I/O): a caller sleeps for what ``next_delay`` says.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

# 2**60 times any sane initial delay is past every cap; bounding the exponent keeps a
# loop that failed for years from overflowing a float.
_MAX_DOUBLINGS = 60


def exponential_delay(attempt: int, initial: float, cap: float) -> float:
    """``min(cap, initial * 2**attempt)`` for the 0-based ``attempt``, never overflowing."""
    return min(cap, initial * 2.0 ** min(attempt, _MAX_DOUBLINGS))


def jittered(delay: float, unit: float) -> float:
    """``delay`` scaled to between half and all of it by ``unit`` in [0, 1)."""
    return delay * (0.5 + 0.5 * unit)


class Backoff:
    """Delays for one retry loop: ``next_delay()`` before each retry, ``reset()`` after a
    success. With ``jitter`` (the default) attempt n waits between half and all of
    ``min(cap, initial * 2**n)``; without it exactly that."""

    __slots__ = ("initial", "cap", "attempt", "jitter", "_random")

    def __init__(
        self,
        initial: float,
        cap: float,
        *,
        jitter: bool = True,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not (initial > 0 and cap >= initial and math.isfinite(cap)):
            raise ValueError(f"backoff needs 0 < initial <= cap, got {initial} and {cap}")
        self.initial = initial
        self.cap = cap
        self.attempt = 0
        self.jitter = jitter
        self._random = rng

    def next_delay(self) -> float:
        delay = exponential_delay(self.attempt, self.initial, self.cap)
        self.attempt += 1
        return jittered(delay, self._random()) if self.jitter else delay

    def reset(self) -> None:
        self.attempt = 0


# Back-off while the database is unreachable: the work is kept and retried every second
# at most, so the daemon is back within about a second of the database. A failed
# attempt costs the server next to nothing (a refused connect, a write lock still held
# by someone else), and a slow one spaces itself out: SQLite's busy wait (5 s) and a
# MySQL connect timeout are spent inside the attempt. A retry loop logs the first
# failure and then one line per DB_DOWN_LOG_INTERVAL, not one per attempt (``Outage``).
DB_RETRY_INITIAL = 0.5
DB_RETRY_MAX = 1.0
DB_DOWN_LOG_INTERVAL = 60.0


def database_backoff() -> Backoff:
    """The retry spacing of every loop waiting for the database (the engine's batch, the
    callback sender's outbox reads and attempt writes): exact doubling from
    DB_RETRY_INITIAL to DB_RETRY_MAX (one daemon per database, so no jitter)."""
    return Backoff(DB_RETRY_INITIAL, DB_RETRY_MAX, jitter=False)


class Outage:
    """When a retry loop should log about the outage it waits out: the first failure,
    then one line per ``interval`` (the attempts go on every second), and the end.
    Fed the caller's clock (seconds)."""

    __slots__ = ("since", "interval", "_last_line")

    def __init__(self, interval: float = DB_DOWN_LOG_INTERVAL) -> None:
        self.since: float | None = None  # the first failure of this outage
        self.interval = interval
        self._last_line = -math.inf

    def failed(self, now: float) -> bool:
        """An attempt failed; True if a line is due (``now - since`` says how long)."""
        if self.since is None:
            self.since = now
        if now - self._last_line < self.interval:
            return False
        self._last_line = now
        return True

    def ended(self, now: float) -> float | None:
        """An attempt succeeded: how long the outage lasted, None if there was none."""
        since, self.since, self._last_line = self.since, None, -math.inf
        return None if since is None else now - since


# -- reconnecting a long-lived link (the Insight socket) ---------------------------------

# A connect that the server's host refuses (nothing listens on the port: Insight is
# restarting) costs it one SYN and one RST, so while that is all that happens the link
# is retried at least every REFUSED_RETRY_CAP seconds (jittered to between half and all
# of it): a restarted Insight is seen within about a second of listening again. Only a
# refusal that came back within FAST_REFUSAL_SECONDS counts as one; a slow one (SYN
# retransmits, a filtering firewall) backs off like every other failure.
REFUSED_RETRY_CAP = 1.0
FAST_REFUSAL_SECONDS = 1.0
# A link that stayed up this long proved the server accepts and serves us, so the next
# reconnect starts again from the initial delay: a server that drops its clients every
# few seconds (a kick, a proxy's idle timeout) costs one handshake per drop. A link
# dropped sooner (a proxy or an overloaded server that accepts and drops at once) keeps
# backing off instead of being hammered.
STABLE_LINK_SECONDS = 1.0


class ReconnectPolicy:
    """How long a long-lived link waits before its next connection attempt.

    Three outcomes are told apart, because they cost the server very different amounts:

    * ``after_drop(lasted)``: the link was up, then lost. After a stable link (at least
      ``STABLE_LINK_SECONDS``) the schedule starts over: between half and all of
      ``initial``. A shorter one counts as a failure.
    * ``after_attempt_failed(refused=True, took)`` with ``took`` under
      ``FAST_REFUSAL_SECONDS``: a fast refusal. Doubling from ``initial`` but capped at
      ``REFUSED_RETRY_CAP`` (or ``initial`` if that is longer; never above ``cap``).
    * any other failed attempt (a timeout, DNS, TLS, a refused websocket upgrade, a
      connection accepted and closed before it was usable): doubling from ``initial``
      to ``cap``.

    Fast refusals and failures keep separate counts: a run of refusals does not make
    the first timeout after it wait the full cap, and a timeout does not stretch the
    cheap retries of a server that is merely restarting. Every delay is jittered to
    between half and all of its step (many daemons share one Insight). Pure: the caller
    measures ``lasted``/``took`` and sleeps.
    """

    __slots__ = ("_failures", "_refusals")

    def __init__(
        self,
        initial: float,
        cap: float,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        refused_cap = min(cap, max(initial, REFUSED_RETRY_CAP))
        self._failures = Backoff(initial, cap, rng=rng)
        self._refusals = Backoff(initial, refused_cap, rng=rng)

    def after_drop(self, lasted: float) -> float:
        self._refusals.reset()  # it was listening
        if lasted >= STABLE_LINK_SECONDS:
            self._failures.reset()
        return self._failures.next_delay()

    def after_attempt_failed(self, *, refused: bool, took: float) -> float:
        if refused and took < FAST_REFUSAL_SECONDS:
            return self._refusals.next_delay()
        return self._failures.next_delay()
