"""Money: integer duffs on every path, Decimal for DASH and fiat text. Never float.

1 DASH = 100,000,000 duffs. Amounts typed by people or read from JSON arrive as text
(or, from Insight REST, sometimes as JSON numbers); both are converted through
``Decimal`` so "0.1" is exactly 10,000,000 duffs.
"""

from __future__ import annotations

import re
from decimal import Decimal

DUFFS_PER_DASH = 100_000_000
DASH_DECIMALS = 8
# Dash's emission converges below 18.9M DASH; Dash Core's MAX_MONEY is 21M DASH. Any
# single amount above it is a typo or an attack.
MAX_DASH = Decimal(21_000_000)
MAX_DUFFS = 21_000_000 * DUFFS_PER_DASH

_QUANTUM = Decimal(1).scaleb(-DASH_DECIMALS)


class AmountError(ValueError):
    """An amount that cannot be money; the message says why."""


# THE notation of an amount given by a person or a client (CLI argument, control
# socket string): ASCII digits with at most one decimal point ("1.5", "0.1", ".5",
# "2."), an optional sign, surrounding whitespace ignored. Everything else Python's
# Decimal would take is refused: exponents ("1e2" would be 100 DASH), underscores
# ("1_000"), other scripts' digits, "Infinity" and "NaN". A minus sign is let through
# the syntax so that the message can say "negative".
_PLAIN_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
# Longer text is no amount anyone meant (21,000,000.00000001 is 17 characters).
MAX_AMOUNT_CHARS = 40
# Fiat amounts: what no invoice is (above it the number is a typo or an attack).
MAX_FIAT = Decimal(10) ** 15
PLAIN_HINT = "write it as plain decimal digits such as 1.5 (no exponent, no separators)"


def echo(value: object) -> str:
    """An amount as it was given, for a message: text quoted and cut, numbers as they
    are (never the normalised Decimal: "1E+9" is not what anybody typed)."""
    if isinstance(value, str):
        return repr(value if len(value) <= MAX_AMOUNT_CHARS else value[:MAX_AMOUNT_CHARS] + "...")
    return str(value)


def parse_decimal(text: object, *, what: str = "amount") -> Decimal:
    """An amount as a finite Decimal: text in the plain notation above, an int, or a
    Decimal (a JSON number, decoded exactly by ``wire/jsonrpc.py``; the JSON grammar
    has no underscores, infinities or NaN). A float is refused: it is already rounded."""
    if isinstance(text, bool):
        raise AmountError(f"{what} must be a number, not true/false")
    if isinstance(text, float):
        raise AmountError(f"{what} must be given as a decimal string, not a binary float")
    if isinstance(text, int):
        return Decimal(text)
    if isinstance(text, Decimal):
        if not text.is_finite():
            raise AmountError(f"{what} {echo(text)} is not a finite number")
        return text
    if not isinstance(text, str):
        raise AmountError(f"{what} must be a decimal string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise AmountError(f"{what} is empty; give a number such as 1.5")
    if len(stripped) > MAX_AMOUNT_CHARS or not _PLAIN_DECIMAL.fullmatch(stripped):
        raise AmountError(f"{what} {echo(text)} is not a plain decimal number; {PLAIN_HINT}")
    return Decimal(stripped)


def _check_decimals(value: Decimal, given: object, what: str) -> None:
    if value != value.quantize(_QUANTUM, rounding="ROUND_DOWN"):
        raise AmountError(
            f"{what} {echo(given)} has more than {DASH_DECIMALS} decimal places; "
            "1 duff (0.00000001 DASH) is the smallest unit"
        )


def dash_to_duffs(amount: object, *, what: str = "amount", allow_zero: bool = False) -> int:
    """Convert a DASH amount (text, int or Decimal) to duffs, exactly.

    Refuses negatives, more than 8 decimal places (no silent rounding of money),
    zero unless ``allow_zero``, and anything over 21,000,000 DASH. Messages quote
    ``amount`` as given."""
    value = parse_decimal(amount, what=what)
    if value < 0:
        raise AmountError(f"{what} {echo(amount)} is negative; give a positive amount of DASH")
    if value == 0 and not allow_zero:
        raise AmountError(f"{what} must be greater than 0")
    if value > MAX_DASH:
        raise AmountError(f"{what} {echo(amount)} is more than 21,000,000 DASH")
    _check_decimals(value, amount, what)
    return int(value * DUFFS_PER_DASH)


def fiat_amount(amount: object, *, what: str = "amount") -> Decimal:
    """A fiat amount due (text, int or Decimal): positive, at most 8 decimal places,
    at most 10^15. Kept as the Decimal given; converted to duffs at a quote later."""
    value = parse_decimal(amount, what=what)
    if value <= 0:
        raise AmountError(f"{what} must be greater than 0, got {echo(amount)}")
    if value > MAX_FIAT:  # before the quantize, which a huge exponent would overflow
        raise AmountError(f"{what} {echo(amount)} is implausibly large")
    _check_decimals(value, amount, what)
    return value


def insight_dash_to_duffs(value: object) -> int:
    """Convert a DASH amount from Insight REST (string like "0.21247964", or a JSON
    number that ``json`` decoded as float/int) to duffs.

    Insight prints at most 8 decimals; a JSON float is converted through its shortest
    repr (``repr(0.1) == '0.1'``), which recovers the printed decimal exactly (that
    repr may have an exponent, ``1e-08``: the float is a number already, not text).
    """
    if isinstance(value, bool):
        raise AmountError("amount is a boolean, not a number")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise AmountError(f"amount {value!r} is not a finite number")
        value = Decimal(repr(value))
    duffs = parse_decimal(value) * DUFFS_PER_DASH
    if duffs != duffs.to_integral_value():
        raise AmountError(f"amount {value!s} is not a whole number of duffs")
    if duffs < 0:
        raise AmountError(f"amount {value!s} is negative")
    return int(duffs)


def duffs_to_dash(duffs: int) -> Decimal:
    """Duffs as an exact Decimal DASH amount with 8 decimals."""
    return (Decimal(duffs) / DUFFS_PER_DASH).quantize(_QUANTUM)


def format_dash(duffs: int) -> str:
    """Duffs as DASH text without trailing zeros: 150000000 -> "1.5", 1 -> "0.00000001"."""
    text = format(duffs_to_dash(duffs), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


# The coin's own code, and the one rule for a fiat currency code (ISO 4217: three
# letters), used by the API, the price service and the price cache alike.
DASH = "DASH"
FIAT_CODE = re.compile(r"[A-Z]{3}")


def fiat_code(value: object, *, what: str = "currency") -> str:
    """A fiat currency code: three letters (any case in, upper case out), not DASH."""
    from dashpay.domain.errors import InvalidParams

    if not isinstance(value, str):
        raise InvalidParams(f"{what} must be a 3-letter code such as USD, got {value!r:.40}")
    code = value.strip().upper()
    if code == DASH:
        raise InvalidParams(f"{what} DASH needs no price; give a fiat code such as USD")
    if not FIAT_CODE.fullmatch(code):
        raise InvalidParams(
            f"{what} must be a 3-letter ISO 4217 code such as USD or EUR, got {value!r:.40}"
        )
    return code
