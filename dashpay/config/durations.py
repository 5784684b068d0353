"""Durations in config files and on the command line: "30s", "15m", "1h30m", "500ms".

Stdlib only and cheap to import: the CLI and the control API parse durations without
loading the rest of the config schema.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from dashpay.config.text import quote

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# No timeout, expiry or window in dashpay is meaningfully longer than a lifetime; a
# bigger value is a typo (an extra zero) and would overflow millisecond timestamps.
MAX_DURATION_SECONDS = 100 * 365 * DAY
# Room for any float written in plain digits (5e-324 has 324 digits after the point, and
# format_duration writes it so); anything longer is not a typo but garbage.
MAX_DURATION_TEXT = 400

_DURATION_EXPECTED = "expected a duration such as 30s, 15m, 2h or 3d"
DURATION_HINT = (
    "write a number with a unit (ms, s, m, h, d), combined largest first as in 1h30m; "
    "a plain number means seconds"
)
_UNITS = ("d", "h", "m", "s", "ms")  # largest first: the only order accepted in "1h30m"
_UNIT_SECONDS = {
    "d": Decimal(DAY),
    "h": Decimal(HOUR),
    "m": Decimal(MINUTE),
    "s": Decimal(1),
    "ms": Decimal("0.001"),
}
_UNIT_MILLISECONDS = (("d", DAY * 1000), ("h", HOUR * 1000), ("m", MINUTE * 1000), ("s", 1000))
# "ms" before "m" so that "5ms" is not read as five minutes followed by garbage.
_COMPONENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|d|h|m|s)")
_PLAIN_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class DurationError(ValueError):
    """A value that is not a duration; ``reason`` says why without naming the key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def parse_duration(text: str | int | float | Decimal, *, key: str = "duration") -> float:
    """Seconds from "30s", "15m", "2h", "3d", "500ms", "1h30m", "0.5s" or a plain number.

    A number (int, float, Decimal, or text such as "90") means seconds. Refuses
    booleans, negatives, unknown units, units out of order or repeated, and anything
    longer than ``MAX_DURATION_SECONDS``. Raises ``DurationError`` (a ``ValueError``)
    whose message starts with ``key``.
    """
    if isinstance(text, bool):
        raise DurationError(key, f"{_DURATION_EXPECTED}, got boolean {str(text).lower()}")
    if isinstance(text, int):
        total = Decimal(text)
        shown = str(text)
    elif isinstance(text, float | Decimal):
        if not (text.is_finite() if isinstance(text, Decimal) else math.isfinite(text)):
            raise DurationError(key, f"{_DURATION_EXPECTED}, got {text}")
        total = Decimal(text)  # exact: the float's own value, no rounding
        shown = str(text)
    elif isinstance(text, str):
        total = _parse_duration_text(text, key)
        shown = quote(text.strip())
    else:
        raise DurationError(key, f"{_DURATION_EXPECTED}, got {type(text).__name__}")
    if total < 0:
        raise DurationError(key, f"a duration cannot be negative, got {shown}")
    if total > MAX_DURATION_SECONDS:
        raise DurationError(key, f"{shown} is longer than 100 years; check for an extra zero")
    return float(total)


def _parse_duration_text(text: str, key: str) -> Decimal:
    stripped = text.strip()
    if not stripped:
        raise DurationError(key, f"{_DURATION_EXPECTED}, got an empty string")
    if len(stripped) > MAX_DURATION_TEXT:
        raise DurationError(key, f"{_DURATION_EXPECTED}, got {len(stripped)} characters of text")
    if stripped.startswith("-"):
        raise DurationError(key, f"a duration cannot be negative, got {quote(stripped)}")
    if _PLAIN_NUMBER.fullmatch(stripped):
        return Decimal(stripped)
    total = Decimal(0)
    position = 0
    last_rank = -1
    while position < len(stripped):
        match = _COMPONENT.match(stripped, position)
        if match is None:
            raise DurationError(key, f"{_DURATION_EXPECTED}, got {quote(stripped)}")
        rank = _UNITS.index(match[2])
        if rank <= last_rank:
            raise DurationError(
                key,
                f"units in {quote(stripped)} must go from largest to smallest, each once "
                "(as in 1h30m)",
            )
        last_rank = rank
        total += Decimal(match[1]) * _UNIT_SECONDS[match[2]]
        position = match.end()
    return total


def format_duration(seconds: float) -> str:
    """The shortest text ``parse_duration`` reads back as exactly ``seconds``.

    Whole milliseconds are written with units, largest first ("1h", "15m", "1m30s",
    "2d3h", "1s500ms", "0s"); any other value as plain seconds ("0.0001s").
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float | Decimal):
        raise ValueError(f"format_duration needs a number of seconds, got {seconds!r}")
    finite = seconds.is_finite() if isinstance(seconds, Decimal) else math.isfinite(seconds)
    if not finite or seconds < 0:
        raise ValueError(f"format_duration needs a finite, non-negative number, got {seconds}")
    if isinstance(seconds, int):
        milliseconds = seconds * 1000
    else:
        milliseconds = round(seconds * 1000)
        if milliseconds / 1000 != seconds:
            return f"{Decimal(repr(float(seconds))):f}s"
    parts = []
    for unit, size in _UNIT_MILLISECONDS:
        count, milliseconds = divmod(milliseconds, size)
        if count:
            parts.append(f"{count}{unit}")
    if milliseconds:
        parts.append(f"{milliseconds}ms")
    return "".join(parts) or "0s"
