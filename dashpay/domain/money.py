"""Money: integer duffs on every path, Decimal for DASH and fiat text. Never float.

1 DASH = 100,000,000 duffs. Amounts typed by people or read from JSON arrive as text
(or, from Insight REST, sometimes as JSON numbers); both are converted through
``Decimal`` so "0.1" is exactly 10,000,000 duffs.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

DUFFS_PER_DASH = 100_000_000
DASH_DECIMALS = 8
# Dash's emission converges below 18.9M DASH; Dash Core's MAX_MONEY is 21M DASH. Any
# single amount above it is a typo or an attack.
MAX_DASH = Decimal(21_000_000)
MAX_DUFFS = 21_000_000 * DUFFS_PER_DASH

_QUANTUM = Decimal(1).scaleb(-DASH_DECIMALS)


class AmountError(ValueError):
    """An amount that cannot be money; the message says why."""


def parse_decimal(text: object, *, what: str = "amount") -> Decimal:
    """Parse ``text`` as a finite Decimal; reject floats (they are already rounded)."""
    if isinstance(text, bool):
        raise AmountError(f"{what} must be a number, not true/false")
    if isinstance(text, float):
        raise AmountError(f"{what} must be given as a decimal string, not a binary float")
    if isinstance(text, int):
        return Decimal(text)
    if isinstance(text, Decimal):
        value = text
    elif isinstance(text, str):
        stripped = text.strip()
        if not stripped:
            raise AmountError(f"{what} is empty; give a number such as 1.5")
        try:
            value = Decimal(stripped)
        except InvalidOperation:
            raise AmountError(
                f"{what} {text!r} is not a number; give a number such as 1.5"
            ) from None
    else:
        raise AmountError(f"{what} must be a decimal string, got {type(text).__name__}")
    if not value.is_finite():
        raise AmountError(f"{what} {text!r} is not a finite number")
    return value


def dash_to_duffs(amount: object, *, what: str = "amount", allow_zero: bool = False) -> int:
    """Convert a DASH amount (text or Decimal) to duffs, exactly.

    Refuses negatives, more than 8 decimal places (no silent rounding of money),
    zero unless ``allow_zero``, and anything over 21,000,000 DASH.
    """
    value = parse_decimal(amount, what=what)
    if value < 0:
        raise AmountError(f"{what} {amount!s} is negative; give a positive amount of DASH")
    if value == 0 and not allow_zero:
        raise AmountError(f"{what} must be greater than 0")
    if value > MAX_DASH:
        raise AmountError(f"{what} {amount!s} is more than 21,000,000 DASH")
    if value != value.quantize(_QUANTUM, rounding="ROUND_DOWN"):
        raise AmountError(
            f"{what} {amount!s} has more than {DASH_DECIMALS} decimal places; "
            "1 duff (0.00000001 DASH) is the smallest unit"
        )
    return int(value * DUFFS_PER_DASH)


def insight_dash_to_duffs(value: object) -> int:
    """Convert a DASH amount from Insight REST (string like "0.21247964", or a JSON
    number that ``json`` decoded as float/int) to duffs.

    Insight prints at most 8 decimals; a JSON float is converted through its shortest
    repr (``repr(0.1) == '0.1'``), which recovers the printed decimal exactly.
    """
    if isinstance(value, bool):
        raise AmountError("amount is a boolean, not a number")
    if isinstance(value, float):
        value = repr(value)
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
