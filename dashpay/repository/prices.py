"""The price cache: the last accepted DASH price of each fiat currency, in the database.

Why the database and not memory: price providers fail, and a daemon that restarts during
an outage must still know the last good price and how old it is (DESIGN.md §7), so a
receiver can be priced while that quote is younger than ``[prices] max_age`` and refused
with an honest age after it. The table holds one row per currency (the newest accepted
quote), so the cache is bounded by the number of currencies, not by time.

``PriceCacheMixin`` is written once over the same hooks as ``schema.SqlRepository``
(``_read``, ``_write``, ``_execute``, ``_insert_if_absent_sql``), so both backends run
the same statements and the contract tests prove them on SQLite and MariaDB.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TypeVar

from dashpay.domain.errors import InvalidParams
from dashpay.domain.money import FIAT_CODE

T = TypeVar("T")

# ISO 4217 alphabetic codes are three upper-case letters; price_quotes.currency is
# VARCHAR(16) in MySQL, so anything longer is refused before it reaches the database.
# price_quotes.price and .provider are VARCHAR(64) in MySQL; SQLite would take more, and
# the two backends must not disagree.
MAX_PRICE_CHARS = 64
MAX_PROVIDER_CHARS = 64
# Plain decimal digits only: no sign, exponent, spaces, NaN or Infinity.
_PRICE_TEXT = re.compile(r"[0-9]{1,40}(?:\.[0-9]{1,40})?")
_PROVIDER_TEXT = re.compile(r"[a-z0-9][a-z0-9_.,:()+-]*")
_COLUMNS = ("currency", "price", "provider", "fetched_at")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM price_quotes"


@dataclass(frozen=True, slots=True)
class PriceQuote:
    """One accepted quote as stored: ``price`` fiat units for 1 DASH, as exact decimal
    text; ``provider`` names who said so ("kraken", or "median(coingecko,kraken)");
    ``fetched_at`` in unix epoch milliseconds."""

    currency: str
    price: str
    provider: str
    fetched_at: int


def check_quote(quote: object) -> PriceQuote:
    """The quote if it is fit to store, else InvalidParams saying which field is wrong
    (a wrong one is a bug upstream, but it must never reach a receiver's rate)."""
    if not isinstance(quote, PriceQuote):
        raise InvalidParams(f"expected a PriceQuote, got {type(quote).__name__}")
    if not isinstance(quote.currency, str) or not FIAT_CODE.fullmatch(quote.currency):
        raise InvalidParams(f"currency must be 3 upper-case letters, got {quote.currency!r:.40}")
    price = quote.price
    if (
        not isinstance(price, str)
        or len(price) > MAX_PRICE_CHARS
        or not _PRICE_TEXT.fullmatch(price)
    ):
        raise InvalidParams(f"price must be plain decimal text, got {price!r:.80}")
    try:
        positive = Decimal(price) > 0
    except InvalidOperation:  # pragma: no cover - the pattern admits only digits
        positive = False
    if not positive:
        raise InvalidParams(f"price must be greater than 0, got {price}")
    provider = quote.provider
    if (
        not isinstance(provider, str)
        or len(provider) > MAX_PROVIDER_CHARS
        or not _PROVIDER_TEXT.fullmatch(provider)
    ):
        raise InvalidParams(f"provider must be a short lower-case name, got {provider!r:.80}")
    fetched_at = quote.fetched_at
    if isinstance(fetched_at, bool) or not isinstance(fetched_at, int) or fetched_at < 0:
        raise InvalidParams(f"fetched_at must be epoch milliseconds, got {fetched_at!r:.40}")
    return quote


def _check_currency(currency: object) -> str:
    if not isinstance(currency, str) or not FIAT_CODE.fullmatch(currency):
        raise InvalidParams(f"currency must be 3 upper-case letters, got {currency!r:.40}")
    return currency


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return str(value)


def _quote_from_row(row: Sequence[Any]) -> PriceQuote:
    currency, price, provider, fetched_at = row
    return PriceQuote(_text(currency), _text(price), _text(provider), int(fetched_at))


class PriceCacheMixin:
    """The price-cache units of work of ``SqlRepository`` (see the module docstring)."""

    if TYPE_CHECKING:  # provided by SqlRepository and its backends

        def _read(self, work: Callable[[Any], T]) -> T: ...

        def _write(self, work: Callable[[Any], T]) -> T: ...

        def _execute(self, cursor: Any, sql: str, params: Sequence[Any] = ()) -> Any: ...

        def _insert_if_absent_sql(
            self, table: str, columns: Sequence[str], key: Sequence[str]
        ) -> str: ...

    def save_quote(self, quote: PriceQuote) -> PriceQuote:
        """Store ``quote`` as its currency's cached quote unless the stored one is newer
        (another process may have fetched later), in one transaction; return the quote
        now stored. Raises InvalidParams for a malformed quote."""
        quote = check_quote(quote)
        insert = self._insert_if_absent_sql("price_quotes", _COLUMNS, ("currency",))
        # A quote fetched at the same millisecond replaces the stored one: the caller
        # just accepted it, and it must read back what it stored.
        update = (
            "UPDATE price_quotes SET price = ?, provider = ?, fetched_at = ?"
            " WHERE currency = ? AND fetched_at <= ?"
        )

        def work(cur: Any) -> PriceQuote:
            values = (quote.currency, quote.price, quote.provider, quote.fetched_at)
            self._execute(cur, insert, values)
            self._execute(
                cur,
                update,
                (quote.price, quote.provider, quote.fetched_at, quote.currency, quote.fetched_at),
            )
            row = self._execute(cur, f"{_SELECT} WHERE currency = ?", (quote.currency,))
            return _quote_from_row(row.fetchone())

        return self._write(work)

    def get_quote(self, currency: str) -> PriceQuote | None:
        """The cached quote of ``currency`` (any age), or None."""
        currency = _check_currency(currency)
        sql = f"{_SELECT} WHERE currency = ?"
        row = self._read(lambda cur: self._execute(cur, sql, (currency,)).fetchone())
        return None if row is None else _quote_from_row(row)

    def list_quotes(self) -> list[PriceQuote]:
        """Every cached quote, by currency code."""
        sql = f"{_SELECT} ORDER BY currency"
        rows = self._read(lambda cur: self._execute(cur, sql).fetchall())
        return [_quote_from_row(row) for row in rows]
