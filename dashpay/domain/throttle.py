"""At most one log line per second per kind, and the count of what was held back.

A warning that a hostile or broken peer can trigger once per connection (a refused or
evicted control connection, a message over the limit) would otherwise let that peer
write the log as fast as it can connect: 17k WARNING lines in 8 s from one abuser of
the control socket. ``ThrottledLog`` lets the first line of each kind through, holds
back the rest for ``interval`` seconds, and appends the count of what it held back to
the next line it lets through, e.g. ``... (suppressed 1234 similar in the last 1.0s)``,
like the kernel's printk rate limit ("N callbacks suppressed"). Nothing is lost but the
repetition: the count says how much happened.

``Throttle`` is the decision alone, fed a clock (``time.monotonic`` unless told), so it
is tested without sleeping; ``ThrottledLog`` wraps any ``logging.Logger``. A kind is a
literal from the code ("refused", "evicted"), never data, so the table of kinds stays as
small as the set of call sites.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

# One line per second per kind: enough to show an attack is going on and what it does,
# with the suppressed count saying how hard; too few to fill a disk or the journal's
# rate limit (systemd-journald drops a service's lines past 10,000 per 30 s by default).
LOG_THROTTLE_INTERVAL = 1.0


@dataclass(slots=True)
class _Window:
    opened: float  # when the last line of this kind went out
    suppressed: int = 0


@dataclass(frozen=True, slots=True)
class Admitted:
    """A line may go out; ``suppressed`` were held back in the ``elapsed`` s before it."""

    suppressed: int
    elapsed: float


class Throttle:
    """Lets one event per kind through every ``interval`` seconds and counts the rest."""

    def __init__(
        self, interval: float = LOG_THROTTLE_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def admit(self, kind: str) -> Admitted | None:
        """``Admitted`` if an event of ``kind`` may be reported now, else None (counted)."""
        now = self._clock()
        window = self._windows.get(kind)
        if window is None:
            self._windows[kind] = _Window(now)
            return Admitted(0, 0.0)
        if now - window.opened < self.interval:
            window.suppressed += 1
            return None
        admitted = Admitted(window.suppressed, now - window.opened)
        window.opened = now
        window.suppressed = 0
        return admitted


class ThrottledLog:
    """A logger's ``warning``/``info``/``log`` with a kind: one line per kind per interval."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = LOG_THROTTLE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.throttle = Throttle(interval, clock)

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        self._log(level, kind, msg, args)

    def warning(self, kind: str, msg: str, *args: object) -> None:
        self._log(logging.WARNING, kind, msg, args)

    def info(self, kind: str, msg: str, *args: object) -> None:
        self._log(logging.INFO, kind, msg, args)

    def _log(self, level: int, kind: str, msg: str, args: tuple[object, ...]) -> None:
        if not self.logger.isEnabledFor(level):
            return  # a disabled level neither logs nor counts
        admitted = self.throttle.admit(kind)
        if admitted is None:
            return
        if admitted.suppressed:
            msg += " (suppressed %d similar in the last %.1fs)"
            args = (*args, admitted.suppressed, admitted.elapsed)
        self.logger.log(level, msg, *args, stacklevel=3)  # the caller of warning()/info()
