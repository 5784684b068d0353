"""The price providers (CoinGecko, Kraken, Coinbase): each one's request and the
checks of its answer, from raw bytes to a Reading or a ProviderError."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Protocol

from dashpay import __version__
from dashpay.config.model import PricesConfig
from dashpay.domain.money import DASH

# --- limits, each with its reason -------------------------------------------------------

# A ticker answer is tiny (Kraken's, the largest, is about 350 bytes). 64 KiB leaves room
# for a provider's error page while bounding what a broken or hostile server can make us
# buffer.
MAX_RESPONSE_BYTES = 64 * 1024
# How much of a bad answer a log line or an error message quotes.
EXCERPT_CHARS = 120
_USER_AGENT = f"dashpay/{__version__}"


# --- errors -----------------------------------------------------------------------------


class ProviderError(Exception):
    """A provider gave no usable answer (network, timeout, HTTP status). The message says
    why, without the provider's name (the caller adds it)."""


class BadAnswer(ProviderError):
    """The provider answered, but with something that is not a sane price: HTML, garbage,
    a changed JSON shape, zero, a negative or non-finite number, a stale price."""


class NotQuoted(ProviderError):
    """The provider says it does not quote DASH in this currency."""


# --- pure helpers -----------------------------------------------------------------------


def excerpt(data: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """A printable, shortened rendering of (part of) an answer for messages."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def decode_json(body: bytes) -> Any:
    """A provider's body as JSON, with JSON numbers as exact Decimals (``NaN`` and
    ``Infinity`` become Decimals too, so ``sane_price`` can name them). BadAnswer for
    anything that is not JSON, with a hint when it is an HTML page."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadAnswer(f"the answer is not UTF-8 text: {excerpt(body)}") from None
    stripped = text.lstrip()
    if not stripped:
        raise BadAnswer("the answer is empty")
    if stripped.startswith("<"):
        raise BadAnswer(f"the answer is an HTML page, not JSON: {excerpt(stripped)}")
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=Decimal)
    except (ValueError, RecursionError):
        raise BadAnswer(f"the answer is not JSON: {excerpt(stripped)}") from None


# --- provider adapters ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """A provider's raw price (not yet checked) and, if it says so, when that price was
    last updated (unix seconds)."""

    value: Any
    as_of: int | None = None


class Provider(Protocol):
    name: ClassVar[str]
    base_url: str

    def quotes(self, currency: str) -> bool:
        """Whether the provider may quote DASH in ``currency`` (False: never ask)."""

    def request(self, currency: str) -> tuple[str, dict[str, str]]:
        """The URL and query parameters of the price request."""

    def parse(self, status: int, payload: Any, currency: str) -> Reading:
        """The reading in a decoded answer of HTTP ``status``, or ProviderError."""


def _object(payload: Any, what: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise BadAnswer(f"{what} is a JSON {_json_kind(payload)}, expected an object")
    return payload


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _status_error(status: int, detail: str) -> ProviderError:
    if status == 429:
        return ProviderError(f"rate limited (HTTP 429): {detail}")
    return ProviderError(f"HTTP {status}: {detail}")


# CoinGecko's fiat vs-currencies (GET /api/v3/simple/supported_vs_currencies, less the
# crypto, commodity and defunct ones: btc, eth, ..., xdr, xag, xau, vef, bits, sats).
# fmt: off
COINGECKO_FIAT = frozenset({
    "USD", "AED", "ARS", "AUD", "BDT", "BHD", "BMD", "BRL", "CAD", "CHF", "CLP", "CNY", "CZK",
    "DKK", "EUR", "GBP", "GEL", "HKD", "HUF", "IDR", "ILS", "INR", "JPY", "KRW", "KWD", "LKR",
    "MMK", "MXN", "MYR", "NGN", "NOK", "NZD", "PHP", "PKR", "PLN", "RUB", "SAR", "SEK", "SGD",
    "THB", "TRY", "TWD", "UAH", "VND", "ZAR",
})
# fmt: on


@dataclass(frozen=True, slots=True)
class CoinGecko:
    """``GET /api/v3/simple/price?ids=dash&vs_currencies=usd``:
    ``{"dash":{"usd":22.15,"last_updated_at":1747833614}}``; a vs-currency it does not
    support gives ``{"dash":{}}``."""

    base_url: str
    name: ClassVar[str] = "coingecko"

    def quotes(self, currency: str) -> bool:
        return currency in COINGECKO_FIAT

    def request(self, currency: str) -> tuple[str, dict[str, str]]:
        params = {
            "ids": "dash",
            "vs_currencies": currency.lower(),
            "include_last_updated_at": "true",
            "precision": "full",
        }
        return f"{self.base_url}/api/v3/simple/price", params

    def parse(self, status: int, payload: Any, currency: str) -> Reading:
        if status != 200:
            detail = excerpt(json.dumps(payload, default=str))
            if isinstance(payload, dict) and isinstance(payload.get("status"), dict):
                detail = excerpt(str(payload["status"].get("error_message", detail)))
            raise _status_error(status, detail)
        coin = _object(payload, "the answer").get("dash")
        if not isinstance(coin, dict):
            raise BadAnswer('the answer has no "dash" object (has the coin id changed?)')
        key = currency.lower()
        if key not in coin:
            if set(coin) <= {"last_updated_at"}:
                raise NotQuoted(f"it does not quote DASH in {currency}")
            raise BadAnswer(f'the answer has no "{key}" price for dash')
        value = coin[key]
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise BadAnswer(f"the price is a JSON {_json_kind(value)}, expected a number")
        as_of = coin.get("last_updated_at")
        if isinstance(as_of, bool) or not isinstance(as_of, int):
            as_of = None
        return Reading(value, as_of)


@dataclass(frozen=True, slots=True)
class Kraken:
    """``GET /0/public/Ticker?pair=DASHUSD``: ``{"error":[],"result":{"DASHUSD":{...,
    "c":["22.14000","0.5"],...}}}``; the price is ``c[0]``, the last trade. Errors come
    with HTTP 200 in ``error``. DASH trades on Kraken against USD and EUR only."""

    base_url: str
    name: ClassVar[str] = "kraken"
    currencies: ClassVar[frozenset[str]] = frozenset({"USD", "EUR"})

    def quotes(self, currency: str) -> bool:
        return currency in self.currencies

    def request(self, currency: str) -> tuple[str, dict[str, str]]:
        return f"{self.base_url}/0/public/Ticker", {"pair": f"DASH{currency}"}

    def parse(self, status: int, payload: Any, currency: str) -> Reading:
        pair = f"DASH{currency}"
        if status != 200:
            errors = payload.get("error") if isinstance(payload, dict) else None
            detail = "; ".join(map(str, errors[:3])) if isinstance(errors, list) else ""
            raise _status_error(status, excerpt(detail or json.dumps(payload, default=str)))
        answer = _object(payload, "the answer")
        errors = answer.get("error", [])
        if not isinstance(errors, list):
            raise BadAnswer(f'"error" is a JSON {_json_kind(errors)}, expected an array')
        if errors:
            detail = excerpt("; ".join(str(e) for e in errors[:3]))
            if any(str(e).startswith("EQuery:Unknown asset pair") for e in errors):
                # We only ask for pairs Kraken listed: the market was dropped.
                raise ProviderError(f"Kraken no longer knows the pair {pair}: {detail}")
            raise ProviderError(f"Kraken error: {detail}")
        result = _object(answer.get("result"), '"result"')
        ticker = result.get(pair)
        if ticker is None and len(result) == 1:
            # Kraken keys results by its own pair name, which for older assets carries
            # X/Z prefixes (XXBTZUSD); accept the one entry if it is this DASH pair.
            key, only = next(iter(result.items()))
            if key.startswith(("DASH", "XDASH")) and key.endswith(currency):
                ticker = only
        if not isinstance(ticker, dict):
            raise BadAnswer(f"the answer has no {pair} ticker (keys: {excerpt(str(list(result)))})")
        last = ticker.get("c")
        if not isinstance(last, list) or not last:
            raise BadAnswer(f'the {pair} ticker has no "c" (last trade) array')
        if not isinstance(last[0], str):
            raise BadAnswer(f"the last trade price is a JSON {_json_kind(last[0])}, not text")
        return Reading(last[0])


@dataclass(frozen=True, slots=True)
class Coinbase:
    """``GET /v2/prices/DASH-USD/spot``: ``{"data":{"amount":"22.135","base":"DASH",
    "currency":"USD"}}``. It converts to most fiat currencies, so any code may be
    asked; an unknown one gives 404 ``{"errors":[{"id":"not_found","message":"Invalid
    currency"}]}``."""

    base_url: str
    name: ClassVar[str] = "coinbase"

    def quotes(self, currency: str) -> bool:
        return True

    def request(self, currency: str) -> tuple[str, dict[str, str]]:
        return f"{self.base_url}/v2/prices/DASH-{currency}/spot", {}

    def parse(self, status: int, payload: Any, currency: str) -> Reading:
        if status != 200:
            messages: list[str] = []
            errors = payload.get("errors") if isinstance(payload, dict) else None
            if isinstance(errors, list):
                messages = [str(e.get("message", "")) for e in errors[:3] if isinstance(e, dict)]
            detail = excerpt("; ".join(messages) or json.dumps(payload, default=str))
            text = " ".join(messages).lower()
            if status in (400, 404) and "currency" in text:
                if "base" in text:
                    raise ProviderError(f"Coinbase no longer quotes DASH: {detail}")
                raise NotQuoted(f"it does not quote DASH in {currency}: {detail}")
            raise _status_error(status, detail)
        data = _object(_object(payload, "the answer").get("data"), '"data"')
        if data.get("base") != DASH or data.get("currency") != currency:
            raise BadAnswer(
                f"the answer is for {excerpt(str(data.get('base')), 20)}-"
                f"{excerpt(str(data.get('currency')), 20)}, not DASH-{currency}"
            )
        amount = data.get("amount")
        if not isinstance(amount, str):
            raise BadAnswer(f"the amount is a JSON {_json_kind(amount)}, not text")
        return Reading(amount)


@dataclass(frozen=True, slots=True)
class SandboxRate(CoinGecko):
    """The sandbox's fixed fake rate, which its own server answers in CoinGecko's shape.
    Named for what it is: no sandbox receiver claims that a real provider quoted it."""

    name: ClassVar[str] = "sandbox"


PROVIDER_TYPES: Mapping[str, type] = {cls.name: cls for cls in (CoinGecko, Kraken, Coinbase)}


def make_providers(config: PricesConfig) -> tuple[Provider, ...]:
    """The configured providers, in the order they are tried."""
    return tuple(PROVIDER_TYPES[name](config.url(name)) for name in config.providers)
