"""Prices as money: a sane quote, its text, and fiat amounts in duffs (rounded up).
Decimal throughout; pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any

from dashpay.domain.errors import InvalidParams
from dashpay.domain.money import DUFFS_PER_DASH, MAX_DUFFS
from dashpay.repository.prices import MAX_PRICE_CHARS, PriceQuote
from dashpay.services.prices.providers import BadAnswer, excerpt

# A price has at most this many significant digits. CoinGecko's precision=full prints
# about 17; more is garbage, and the text must fit price_quotes.price (VARCHAR(64)).
MAX_PRICE_DIGITS = 30
# Plausible DASH prices in any currency a provider quotes: DASH has traded between about
# 0.2 and 1,500 USD, which is below 4e7 even in the weakest currencies (VND, IDR). The
# bounds are orders of magnitude wider; outside them the answer is garbage.
MIN_PRICE = Decimal("0.000001")
MAX_PRICE = Decimal("1e12")
# fiat_to_duffs refuses amounts and rates outside 10^-30 .. 10^30: their exact ratio
# would need integers of unbounded size (a hostile Decimal('1E+999999') has a million
# digits).
MAX_DECIMAL_EXPONENT = 30


def sane_price(value: Any) -> Decimal:
    """``value`` as a positive, finite, plausible Decimal, else BadAnswer saying what is
    wrong with it. Text must be a plain decimal number; a bool is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        kind = "boolean" if isinstance(value, bool) else type(value).__name__
        raise BadAnswer(f"the price is a {kind}, not a number: {excerpt(str(value))}")
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_PRICE_CHARS:
            raise BadAnswer(f"the price is {len(text)} characters long: {excerpt(text)}")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise BadAnswer(f"the price is not a number: {excerpt(text)}") from None
        if "_" in text or (number.is_finite() and not text.lstrip("+-")[:1].isdigit()):
            raise BadAnswer(f"the price is not a plain decimal number: {excerpt(text)}")
    elif isinstance(value, int):
        if abs(value) > MAX_PRICE:
            raise BadAnswer(f"the price {excerpt(str(value), 40)} is implausibly large")
        number = Decimal(value)
    else:
        number = value
    if number.is_nan():
        raise BadAnswer("the price is NaN")
    if number.is_infinite():
        raise BadAnswer(f"the price is {number} (infinite)")
    if number == 0:
        raise BadAnswer("the price is zero")
    if number < 0:
        raise BadAnswer(f"the price is negative ({number})")
    if len(number.as_tuple().digits) > MAX_PRICE_DIGITS:
        raise BadAnswer(f"the price has more than {MAX_PRICE_DIGITS} digits: {number}")
    if not MIN_PRICE <= number <= MAX_PRICE:
        raise BadAnswer(f"the price {number} is implausible (outside {MIN_PRICE} to {MAX_PRICE})")
    return number


def price_text(price: Decimal) -> str:
    """Exact plain decimal text of a price ("22.135"; never an exponent)."""
    return format(price.normalize(), "f")


def fiat_to_duffs(amount: Decimal, rate: Decimal) -> int:
    """``amount`` (fiat) at ``rate`` (fiat per DASH) in duffs, rounded UP to the duff:
    ceil(amount / rate * 10^8), computed exactly with integers (no float, no Decimal
    context rounding). A merchant never receives less than the fiat amount asked for.
    ValueError for a non-positive, non-finite or absurdly scaled input."""
    for name, value in (("amount", amount), ("rate", rate)):
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise ValueError(f"{name} must be a Decimal, got {type(value).__name__}")
        value = Decimal(value)
        if not value.is_finite() or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value}")
        if abs(value.adjusted()) > MAX_DECIMAL_EXPONENT:
            raise ValueError(f"{name} {value} is out of range")
    amount_num, amount_den = Decimal(amount).as_integer_ratio()
    rate_num, rate_den = Decimal(rate).as_integer_ratio()
    numerator = amount_num * rate_den * DUFFS_PER_DASH
    denominator = amount_den * rate_num
    return -(-numerator // denominator)


@dataclass(frozen=True, slots=True)
class Quote:
    """A price of 1 DASH in ``currency``: who said so and when (epoch milliseconds)."""

    currency: str
    price: Decimal
    provider: str
    fetched_at: int

    def age_ms(self, now: int) -> int:
        return max(0, now - self.fetched_at)

    def row(self) -> PriceQuote:
        return PriceQuote(self.currency, price_text(self.price), self.provider, self.fetched_at)

    @classmethod
    def from_row(cls, row: PriceQuote) -> Quote:
        return cls(row.currency, Decimal(row.price), row.provider, row.fetched_at)


@dataclass(frozen=True, slots=True)
class FiatConversion:
    """What a fiat receiver stores: the duffs due and the fiat terms they came from."""

    amount_duffs: int
    fiat_amount: str
    fiat_currency: str
    rate: str
    rate_provider: str
    rate_fetched_at: int


def convert(amount: Decimal, quote: Quote) -> FiatConversion:
    """``amount`` of ``quote.currency`` in duffs at the quote's price, rounded up.
    InvalidParams when the amount is worth more than 21,000,000 DASH."""
    duffs = fiat_to_duffs(amount, quote.price)
    if duffs > MAX_DUFFS:
        raise InvalidParams(
            f"{amount} {quote.currency} is more than 21,000,000 DASH at "
            f"{price_text(quote.price)} {quote.currency} per DASH"
        )
    return FiatConversion(
        amount_duffs=duffs,
        fiat_amount=format(amount, "f"),
        fiat_currency=quote.currency,
        rate=price_text(quote.price),
        rate_provider=quote.provider,
        rate_fetched_at=quote.fetched_at,
    )


def median(prices: Sequence[Decimal]) -> Decimal:
    """The median, exact: the mean of the middle two of an even count is computed with
    enough precision that nothing is rounded (two prices of at most 30 digits)."""
    ordered = sorted(prices)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    with localcontext() as context:
        context.prec = 2 * MAX_PRICE_DIGITS + 10
        return (ordered[middle - 1] + ordered[middle]) / 2
