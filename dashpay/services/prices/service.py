"""Fiat prices of DASH: provider adapters, the strategy that picks a price, the persistent
cache, and the exact conversion of a fiat amount to duffs.

Why this much care: a wrong price silently charges a customer the wrong amount, and price
sources fail and change (an exchange dropping its DASH market has broken a default rate
source twice). So dashpay never depends on one source: it asks several providers (in
order, or all at once for a median), treats every answer as hostile input, rejects a
price that jumps away from the last good quote when other providers disagree, keeps the
last good quote in the database, and uses it only while it is younger than
``[prices] max_age`` (DESIGN.md §7, docs/prices.md).

Two layers:
- pure functions: each provider's ``parse`` (decoded JSON -> a reading or an error),
  ``decode_json``, ``sane_price``, ``fiat_to_duffs`` and ``convert``;
- ``PriceService``: one shared HTTP/1.1 client on trio (``net/http_post.py``, as Insight
  REST and the callbacks: no httpx in the daemon, issue 19), one fetch at a time per currency
  (callers that arrive meanwhile share its result), the in-memory view of the cache, the
  refresher task and the ``price.get`` control handler. ``quote`` never waits on the
  network while a cached quote is younger than ``max_age``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any
from urllib.parse import urlencode, urlsplit

import trio

from dashpay.config.durations import format_duration
from dashpay.config.model import PricesConfig
from dashpay.domain.clock import now_ms
from dashpay.domain.errors import DashpayError, InvalidParams, PriceUnavailable
from dashpay.domain.money import fiat_code
from dashpay.domain.views import iso_time
from dashpay.net.http_post import (
    ConnectFailed,
    HttpPoster,
    HttpPostError,
    TlsFailed,
    configured_addresses,
    describe_error,
)
from dashpay.net.outbound import Outbound, default_outbound, with_trust_hint
from dashpay.repository.base import Repository
from dashpay.services.prices.convert import (
    FiatConversion,
    Quote,
    convert,
    median,
    price_text,
    sane_price,
)
from dashpay.services.prices.providers import (
    _USER_AGENT,
    MAX_RESPONSE_BYTES,
    BadAnswer,
    NotQuoted,
    Provider,
    ProviderError,
    _status_error,
    decode_json,
    excerpt,
    make_providers,
)

log = logging.getLogger("dashpay.prices")
# On-demand currencies (asked for, not in [prices] currencies) are refreshed too, at
# most this many (each costs requests per refresh; public APIs rate-limit), and only
# while someone asked for them within the last day.
MAX_ON_DEMAND_CURRENCIES = 32
ON_DEMAND_IDLE_MS = 24 * 3600 * 1000
# A provider's "I do not quote this currency" is remembered this long, for at most this
# many (provider, currency) pairs: it does not change by the minute, and a client asking
# for made-up codes must not make us ask the provider every time.
NOT_QUOTED_TTL_MS = 3600 * 1000
MAX_NOT_QUOTED = 1024
# After a failed fetch, a currency with no usable cached quote is refused at once, not
# fetched again, until the refresher's next round has had time to retry it (one refresh
# interval plus the longest a round can take), but never longer than this: during an
# outage receiver creations must fail fast, not each wait for every provider's timeout.
MAX_FAILURE_HOLD_MS = 5 * 60 * 1000
# price.get answers for at most this many currencies per call.
MAX_REQUEST_CURRENCIES = 32


# --- the service ------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


class _CutShort(HttpPostError):
    """The answer's body ended early (the connection broke or the body was too slow)."""


# How a failure is named in messages (the names httpx used, which operators know).
_FAILURE_NAMES: dict[type, str] = {ConnectFailed: "ConnectError", TlsFailed: "ConnectError"}
# Headers of every price request: never spend CPU inflating an answer.
_HEADERS = (
    ("User-Agent", _USER_AGENT),
    ("Accept", "application/json"),
    ("Accept-Encoding", "identity"),
)
# Idle keep-alive connections kept per provider.
_IDLE_PER_PROVIDER = 2


@dataclass(frozen=True, slots=True)
class _Answer:
    provider: str
    price: Decimal


@dataclass
class _Round:
    """What one fetch learned: each failed provider's reason, in provider order."""

    failures: dict[str, str] = field(default_factory=dict)
    not_quoted: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Failure:
    at: int  # epoch ms
    reasons: dict[str, str]


@dataclass
class _Flight:
    """One fetch of a currency in progress; callers arriving meanwhile wait for it."""

    done: trio.Event = field(default_factory=trio.Event)
    quote: Quote | None = None
    error: DashpayError | None = None


class PriceService:
    """Quotes for fiat receivers and ``dashpay price``. Run ``refresh_loop`` in the
    daemon's nursery; it closes the shared HTTP client when it ends."""

    def __init__(
        self,
        repo: Repository,
        config: PricesConfig,
        *,
        clock: Callable[[], int] = now_ms,
        providers: tuple[Provider, ...] | None = None,
        outbound: Outbound | None = None,
    ) -> None:
        """``outbound``: the trust store and proxies (default: the environment's)."""
        self.repo = repo
        self.config = config
        self.clock = clock
        # `providers`: the sandbox's own fixed rate instead of the configured ones.
        self.providers = make_providers(config) if providers is None else providers
        self._outbound = outbound
        # Made at the first request: a daemon that never converts a fiat amount does not
        # pay its connection pool.
        self._client: HttpPoster | None = None
        self._plain: set[tuple[str, int]] = set()
        self._quotes: dict[str, Quote] = {}
        self._failures: dict[str, _Failure] = {}
        self._inflight: dict[str, _Flight] = {}
        self._on_demand: dict[str, int] = {}  # currency -> when last asked for (ms)
        self._not_quoted: dict[tuple[str, str], int] = {}  # (provider, currency) -> until
        self._down: set[str] = set()  # providers whose last request failed (log once)
        self._wake = trio.Event()
        for currency in config.currencies:
            if not self._askable(currency):
                log.warning(
                    "price currency=%s is in [prices] currencies but none of the providers "
                    "%s quotes it; it is not refreshed",
                    currency,
                    ",".join(provider.name for provider in self.providers),
                )

    @property
    def max_age_ms(self) -> int:
        return int(self.config.max_age * 1000)

    @property
    def refresh_ms(self) -> int:
        return int(self.config.refresh * 1000)

    @property
    def hold_ms(self) -> int:
        """How long a failed fetch answers for its currency (see MAX_FAILURE_HOLD_MS)."""
        round_ms = int(self.config.timeout * 1000) * len(self.providers)
        return min(self.refresh_ms + round_ms, MAX_FAILURE_HOLD_MS)

    # -- public API ---------------------------------------------------------------------
    async def quote(self, currency: str) -> Quote:
        """A quote of 1 DASH in ``currency`` young enough to price a receiver.

        Returns the cached quote without touching the network while it is younger than
        ``max_age``. Otherwise fetches one (callers arriving meanwhile share that
        fetch), unless a fetch failed so recently that the refresher is still on it
        (``hold_ms``): then it fails at once. Raises InvalidParams for a malformed code
        or one no configured provider quotes, PriceUnavailable (naming each provider's
        failure and the cache's age) when there is no usable price."""
        currency = fiat_code(currency)
        self._check_quotable(currency)
        now = self.clock()
        self._track(currency, now)
        cached = await self._cached(currency)
        if cached is not None and cached.age_ms(now) <= self.max_age_ms:
            return cached
        failure = self._failures.get(currency)
        if failure is not None and now - failure.at < self.hold_ms:
            raise self._unavailable(currency, failure.reasons, now)
        return await self._refresh_once(currency)

    def cached_quotes(self) -> list[Quote]:
        """The quotes held in memory now, fresh or not, without fetching anything (for
        GET /metrics: a scrape must never wait on a price provider)."""
        return list(self._quotes.values())

    async def convert(self, amount: Decimal, currency: str) -> FiatConversion:
        """``amount`` of fiat ``currency`` in duffs at a usable quote, rounded up."""
        return convert(amount, await self.quote(currency))

    async def price_get(self, currencies: list[str] | None) -> dict[str, Any]:
        """The ``price.get`` command: each currency's quote (default: the configured
        ones and those asked for lately), or an ``error`` (kind and message) and the
        stale ``cached`` quote if there is one."""
        if currencies is None:
            currencies = list(dict.fromkeys([*self.config.currencies, *self._on_demand]))
        entries: list[dict[str, Any]] = [{} for _ in currencies]

        async def one(index: int, currency: str) -> None:
            try:
                entries[index] = self._view(await self.quote(currency))
            except DashpayError as exc:
                stale = self._quotes.get(currency)
                entries[index] = {
                    "currency": currency,
                    "error": {"kind": exc.kind, "message": exc.message},
                    "cached": None if stale is None else self._view(stale),
                }

        async with trio.open_nursery() as nursery:
            for index, currency in enumerate(currencies):
                nursery.start_soon(one, index, currency)
        return {
            "quotes": entries,
            "strategy": self.config.strategy,
            "providers": [provider.name for provider in self.providers],
            "max_age_seconds": self.config.max_age,
            "refresh_seconds": self.config.refresh,
        }

    async def refresh_loop(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the configured and recently asked-for currencies fresh, every
        ``[prices] refresh``. Reports started after loading the cache from the database
        (no network wait). Runs until cancelled; then closes the HTTP client."""
        try:
            await self._load_cache()
            task_status.started()
            while True:
                self._wake = trio.Event()
                await self.refresh_now()
                with trio.move_on_after(self.config.refresh):
                    await self._wake.wait()
        finally:
            with trio.CancelScope(shield=True):
                await self.aclose()

    async def refresh_now(self) -> None:
        """One refresh round: every tracked currency whose quote is older than half the
        refresh interval is fetched, concurrently. Failures are logged, not raised."""
        now = self.clock()
        for currency, asked in list(self._on_demand.items()):
            if now - asked > ON_DEMAND_IDLE_MS:
                del self._on_demand[currency]
                log.info("price no longer refreshed currency=%s (not asked for in a day)", currency)
        currencies = dict.fromkeys([*self.config.currencies, *self._on_demand])
        async with trio.open_nursery() as nursery:
            for currency in currencies:
                cached = self._quotes.get(currency)
                if cached is not None and cached.age_ms(now) < self.refresh_ms // 2:
                    continue
                if not self._askable(currency):
                    continue  # nobody quotes it (logged at start, or said so lately)
                nursery.start_soon(self._refresh_quietly, currency)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _http(self) -> HttpPoster:
        if self._client is None:
            self._outbound = self._outbound or default_outbound()
            # (host, port) of the providers reached over plain http: the proxy rules
            # differ by scheme, and the pool asks for addresses by host and port only.
            for provider in self.providers:
                parts = urlsplit(provider.base_url)
                if parts.scheme.lower() == "http" and parts.hostname:
                    self._plain.add((parts.hostname.lower(), parts.port or 80))
            self._client = HttpPoster(
                self._addresses,
                outbound=self._outbound,
                max_body=MAX_RESPONSE_BYTES,
                body_seconds=self.config.timeout,
                max_idle_per_origin=_IDLE_PER_PROVIDER,
            )
        return self._client

    async def _addresses(self, host: str, port: int) -> list[str]:
        """Where to connect: through a proxy the name itself (the proxy resolves it),
        else its addresses here (a configured provider: no SSRF rules, as for Insight)."""
        assert self._outbound is not None
        scheme = "http" if (host, port) in self._plain else "https"
        return await configured_addresses(self._outbound, scheme, host, port)

    # -- cache --------------------------------------------------------------------------
    async def _load_cache(self) -> None:
        try:
            rows = await trio.to_thread.run_sync(self.repo.list_quotes)
        except DashpayError as exc:
            log.warning("price cache not loaded: %s", exc.message)
            return
        for row in rows:
            self._quotes[row.currency] = Quote.from_row(row)
        if rows:
            now = self.clock()
            log.info(
                "price cache loaded %s",
                " ".join(f"{r.currency}={r.price}@{format_age(now - r.fetched_at)}" for r in rows),
            )

    async def _cached(self, currency: str) -> Quote | None:
        cached = self._quotes.get(currency)
        if cached is None:
            row = await trio.to_thread.run_sync(self.repo.get_quote, currency)
            if row is not None:
                cached = self._quotes[currency] = Quote.from_row(row)
        return cached

    def _track(self, currency: str, now: int) -> None:
        """Refresh ``currency`` from now on (an on-demand currency while it is asked for)."""
        if currency in self.config.currencies:
            return
        new = self._on_demand.pop(currency, None) is None
        self._on_demand[currency] = now
        while len(self._on_demand) > MAX_ON_DEMAND_CURRENCIES:
            dropped = next(iter(self._on_demand))
            del self._on_demand[dropped]
            log.info("price no longer refreshed currency=%s (too many on demand)", dropped)
        if new:
            self._wake.set()

    # -- fetching -----------------------------------------------------------------------
    def _check_quotable(self, currency: str) -> None:
        if self._askable(currency):
            return
        reasons = []
        for provider in self.providers:
            if not provider.quotes(currency):
                reasons.append(f"{provider.name} does not quote {currency}")
            else:
                reasons.append(f"{provider.name} said it does not quote {currency}")
        raise InvalidParams(
            f"no configured price provider quotes DASH in {currency} ({'; '.join(reasons)}); "
            "use another currency, give the amount in DASH, or add a provider to "
            "[prices] providers",
            currency=currency,
        )

    def _askable(self, currency: str) -> list[Provider]:
        now = self.clock()
        askable = []
        for provider in self.providers:
            until = self._not_quoted.get((provider.name, currency))
            if until is not None and until <= now:
                del self._not_quoted[(provider.name, currency)]
                until = None
            if provider.quotes(currency) and until is None:
                askable.append(provider)
        return askable

    async def _refresh_quietly(self, currency: str) -> None:
        failing = currency in self._failures
        try:
            await self._refresh_once(currency)
        except DashpayError as exc:
            level = logging.DEBUG if failing else logging.WARNING
            log.log(level, "price refresh failed currency=%s: %s", currency, exc.message)

    async def _refresh_once(self, currency: str) -> Quote:
        """Fetch ``currency`` now, or wait for the fetch already running (one at a time
        per currency). If the fetching caller is cancelled, a waiter fetches itself."""
        while True:
            flight = self._inflight.get(currency)
            if flight is None:
                break
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            if flight.quote is not None:
                return flight.quote
        flight = self._inflight[currency] = _Flight()
        try:
            flight.quote = await self._fetch(currency)
            return flight.quote
        except DashpayError as exc:
            flight.error = exc
            raise
        finally:
            del self._inflight[currency]
            flight.done.set()

    async def _fetch(self, currency: str) -> Quote:
        providers = self._askable(currency)
        if not providers:
            self._check_quotable(currency)
        reference = self._quotes.get(currency)
        if self.config.strategy == "median":
            choice, round_ = await self._median(providers, currency, reference)
        else:
            choice, round_ = await self._first(providers, currency, reference)
        if choice is None:
            if round_.not_quoted and len(round_.not_quoted) == len(providers):
                self._on_demand.pop(currency, None)
                self._check_quotable(currency)  # every provider just said it does not
            now = self.clock()
            self._failures[currency] = _Failure(now, round_.failures)
            raise self._unavailable(currency, round_.failures, now)
        price, provider = choice
        fresh = Quote(currency, price, provider, self.clock())
        stored = await trio.to_thread.run_sync(self.repo.save_quote, fresh.row())
        quote = Quote.from_row(stored)  # a newer one stored by another process wins
        self._quotes[currency] = quote
        if self._failures.pop(currency, None) is not None:
            log.info(
                "price available again currency=%s price=%s provider=%s",
                currency,
                price_text(price),
                provider,
            )
        log.debug(
            "price accepted currency=%s price=%s provider=%s", currency, price_text(price), provider
        )
        return quote

    def _near(self, price: Decimal, reference: Decimal) -> bool:
        """Whether ``price`` is within ``max_deviation`` percent of ``reference``."""
        return abs(price - reference) * 100 <= reference * self.config.max_deviation

    def _reject(self, answer: _Answer, currency: str, why: str, round_: _Round) -> None:
        log.warning(
            "price rejected provider=%s currency=%s price=%s reason=%s",
            answer.provider,
            currency,
            price_text(answer.price),
            why,
        )
        round_.failures[answer.provider] = f"rejected {price_text(answer.price)}: {why}"

    @staticmethod
    def _deviation(price: Decimal, reference: Decimal) -> str:
        with localcontext() as context:
            context.prec = 10
            return f"{(price - reference) / reference * 100:+.1f}%"

    async def _first(
        self, providers: Sequence[Provider], currency: str, reference: Quote | None
    ) -> tuple[tuple[Decimal, str] | None, _Round]:
        """Providers in order; the first sane answer near the last good quote wins. An
        answer far from it waits for a second opinion: a later provider that agrees
        confirms it (the market moved); one near the old quote refutes it."""
        round_ = _Round()
        suspects: list[_Answer] = []
        for provider in providers:
            price = await self._ask(provider, currency, round_)
            if price is None:
                continue
            answer = _Answer(provider.name, price)
            if reference is None or self._near(price, reference.price):
                self._refute(suspects, currency, reference, provider.name, round_)
                return (price, provider.name), round_
            partner = next((s for s in suspects if self._near(price, s.price)), None)
            if partner is not None:
                for suspect in suspects:
                    if suspect is not partner:
                        why = f"{partner.provider} and {provider.name} agree on another price"
                        self._reject(suspect, currency, why, round_)
                self._log_move(currency, reference, partner, f"confirmed by {provider.name}")
                return (partner.price, partner.provider), round_
            suspects.append(answer)
        if len(suspects) == 1 and reference is not None:
            self._log_move(currency, reference, suspects[0], "no other provider answered")
            return (suspects[0].price, suspects[0].provider), round_
        self._refute(suspects, currency, reference, "the other providers", round_)
        return None, round_

    def _refute(
        self,
        suspects: Sequence[_Answer],
        currency: str,
        reference: Quote | None,
        by: str,
        round_: _Round,
    ) -> None:
        """Reject answers far from the last good quote that ``by`` disagrees with."""
        if reference is None:
            return
        for suspect in suspects:
            why = (
                f"{self._deviation(suspect.price, reference.price)} from the last good quote "
                f"{price_text(reference.price)}, and {by} disagree(s)"
            )
            self._reject(suspect, currency, why, round_)

    async def _median(
        self, providers: Sequence[Provider], currency: str, reference: Quote | None
    ) -> tuple[tuple[Decimal, str] | None, _Round]:
        """Every provider at once; the median of the sane answers. An answer far from
        the last good quote that no other answer agrees with is dropped first."""
        round_ = _Round()
        prices: dict[str, Decimal] = {}

        async def ask(provider: Provider) -> None:
            price = await self._ask(provider, currency, round_)
            if price is not None:
                prices[provider.name] = price

        async with trio.open_nursery() as nursery:
            for provider in providers:
                nursery.start_soon(ask, provider)
        answers = [_Answer(p.name, prices[p.name]) for p in providers if p.name in prices]
        kept: list[_Answer] = []
        for answer in answers:
            others = [a for a in answers if a is not answer]
            if (
                reference is not None
                and others
                and not self._near(answer.price, reference.price)
                and not any(self._near(other.price, answer.price) for other in others)
            ):
                why = (
                    f"{self._deviation(answer.price, reference.price)} from the last good "
                    f"quote {price_text(reference.price)}, and "
                    f"{', '.join(a.provider for a in others)} disagree"
                )
                self._reject(answer, currency, why, round_)
            else:
                kept.append(answer)
        if not kept:
            return None, round_
        if len(kept) == 1:
            if reference is not None and not self._near(kept[0].price, reference.price):
                self._log_move(currency, reference, kept[0], "no other provider answered")
            return (kept[0].price, kept[0].provider), round_
        label = f"median({','.join(a.provider for a in kept)})"
        return (median([a.price for a in kept]), label), round_

    def _log_move(self, currency: str, reference: Quote, answer: _Answer, why: str) -> None:
        log.warning(
            "price moved currency=%s from=%s to=%s (%s) provider=%s: %s",
            currency,
            price_text(reference.price),
            price_text(answer.price),
            self._deviation(answer.price, reference.price),
            answer.provider,
            why,
        )

    async def _ask(self, provider: Provider, currency: str, round_: _Round) -> Decimal | None:
        """One provider's sane price, or None with the reason recorded in ``round_``."""
        try:
            price = await self._request_price(provider, currency)
        except NotQuoted as exc:
            now = self.clock()
            if len(self._not_quoted) >= MAX_NOT_QUOTED:
                del self._not_quoted[next(iter(self._not_quoted))]
            self._not_quoted[(provider.name, currency)] = now + NOT_QUOTED_TTL_MS
            round_.not_quoted.add(provider.name)
            round_.failures[provider.name] = str(exc)
            log.info("price provider=%s currency=%s: %s", provider.name, currency, exc)
            return None
        except ProviderError as exc:
            round_.failures[provider.name] = str(exc)
            if isinstance(exc, BadAnswer) or provider.name not in self._down:
                log.warning(
                    "price provider failed provider=%s currency=%s reason=%s",
                    provider.name,
                    currency,
                    exc,
                )
            else:
                log.debug("price provider still failing provider=%s reason=%s", provider.name, exc)
            self._down.add(provider.name)
            return None
        if provider.name in self._down:
            self._down.discard(provider.name)
            log.info("price provider answers again provider=%s", provider.name)
        return price

    async def _request_price(self, provider: Provider, currency: str) -> Decimal:
        url, params = provider.request(currency)
        timeout = self.config.timeout
        try:
            with trio.move_on_after(timeout) as scope:
                status, headers, body = await self._get(url, params)
        except (HttpPostError, OSError, ValueError) as exc:
            detail = excerpt(with_trust_hint(describe_error(exc)), 300)
            kind = _FAILURE_NAMES.get(type(exc), "ReadError")
            raise ProviderError(f"{kind}: {detail}") from None
        except _TooLarge:
            raise BadAnswer(f"the answer is larger than {MAX_RESPONSE_BYTES} bytes") from None
        if scope.cancelled_caught:
            raise ProviderError(f"no answer within {format_duration(timeout)}")
        if 300 <= status < 400:
            raise ProviderError(
                f"redirected (HTTP {status}) to {excerpt(headers.get('location', '?'), 80)}; "
                f"set [prices.{provider.name}] url to the final address"
            )
        try:
            payload = decode_json(body)
        except BadAnswer:
            if 200 <= status < 300:
                raise
            raise _status_error(status, excerpt(body)) from None
        reading = provider.parse(status, payload, currency)
        price = sane_price(reading.value)
        if reading.as_of is not None:
            age = self.clock() - reading.as_of * 1000
            if age > self.max_age_ms:
                raise BadAnswer(
                    f"its price {price_text(price)} was last updated {format_age(age)} ago"
                )
        return price

    async def _get(self, url: str, params: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """One GET; reads at most ``MAX_RESPONSE_BYTES`` of the body."""
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        response = await self._http().request("GET", url, _HEADERS)
        declared = response.header(b"content-length") or ""
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise _TooLarge
        if not response.complete:
            if len(response.body) >= MAX_RESPONSE_BYTES:
                raise _TooLarge
            raise _CutShort("the answer's body was cut short")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in response.headers}
        return response.status, headers, response.body

    # -- messages -----------------------------------------------------------------------
    def _unavailable(self, currency: str, reasons: Mapping[str, str], now: int) -> PriceUnavailable:
        failed = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
        cached = self._quotes.get(currency)
        limit = format_duration(self.config.max_age)
        if cached is None:
            cache = "there is no cached price"
            age = None
        else:
            age = cached.age_ms(now)
            state = "older than" if age > self.max_age_ms else "within"
            cache = (
                f"the cached price ({price_text(cached.price)} {currency} from "
                f"{cached.provider}) is {format_age(age)} old, {state} [prices] max_age = {limit}"
            )
        return PriceUnavailable(
            f"no fresh DASH price in {currency}: {failed or 'no provider answered'}; {cache}. "
            "Check the network and the [prices] provider URLs; amounts in DASH need no price",
            currency=currency,
            failures=dict(reasons),
            cache_age_seconds=None if age is None else age // 1000,
        )

    def _view(self, quote: Quote) -> dict[str, Any]:
        age = quote.age_ms(self.clock())
        return {
            "currency": quote.currency,
            "price": price_text(quote.price),
            "provider": quote.provider,
            "fetched_at": iso_time(quote.fetched_at),
            "age_seconds": age // 1000,
            "fresh": age <= self.max_age_ms,
        }


def format_age(ms: int) -> str:
    """An age in whole seconds as "42s", "12m30s", "3h" (under a second: "0s")."""
    return format_duration(max(0, ms) // 1000)
