"""The one retry-spacing policy: capped exponential backoff, optionally jittered.

Every loop that retries after a failure (the Insight socket's reconnects, Insight REST
retries, the engine's and the callback sender's database retries, the daemon's rescan
retry) waits ``min(cap, initial * 2**attempt)`` before attempt ``attempt + 1``. Loops
that many daemons run against one shared server (the Insight socket and REST) jitter
that to between half and all of it, so daemons that failed together do not come back
together; the lower half-bound keeps retries from ever becoming a tight loop. Loops
against a daemon's own database do not need jitter and keep exact doubling, which
also makes their log lines predictable.

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


# Back-off while the database is unreachable (the engine's batch, the callback sender's
# outbox reads and attempt writes): the work is kept and retried, first soon (a failover
# or a restart takes seconds), then at most every 30 s so an outage does not flood the
# logs or the server's connection limit.
DB_RETRY_INITIAL = 0.5
DB_RETRY_MAX = 30.0


def database_backoff() -> Backoff:
    """The retry spacing of every loop waiting for the database: exact doubling from
    DB_RETRY_INITIAL to DB_RETRY_MAX (one daemon per database, so no jitter)."""
    return Backoff(DB_RETRY_INITIAL, DB_RETRY_MAX, jitter=False)
