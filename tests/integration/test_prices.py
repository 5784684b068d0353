"""Prices end to end: ``PriceService`` against real HTTP servers on 127.0.0.1 that
replay each provider's recorded answer format (tests/fixtures/prices), with a real
database as the persistent cache.

What is proven here: failover order and the median strategy; rejection of zero, HTML,
garbage and outlier prices (each with a log line naming the provider); the cached quote
is used within ``max_age`` when every provider fails and refused after it, also across a
restart (a new repository on the same database); conversions round up to the duff; and
concurrent fiat conversions during a provider outage never wait on the network.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import partial
from pathlib import Path

import pytest
import trio

from dashpay.config.database import parse_database_url
from dashpay.config.load import config_from_dict
from dashpay.config.model import PricesConfig
from dashpay.domain.errors import PRICE_UNAVAILABLE, DashpayError, InvalidParams, PriceUnavailable
from dashpay.net.control_server import serve_control
from dashpay.repository import open_repository
from dashpay.repository.base import Repository
from dashpay.repository.prices import PriceQuote
from dashpay.repository.sqlite import SqliteRepository
from dashpay.services.prices.convert import fiat_to_duffs
from dashpay.services.prices.providers import MAX_RESPONSE_BYTES
from dashpay.services.prices.service import PriceService
from tests.commands import rpc
from tests.conftest import REPO, cli_env
from tests.insight_stub import InsightStub, Reply, Request

FIXTURES = REPO / "tests" / "fixtures" / "prices"
# The test clock starts 30 s after CoinGecko's sample says its price was updated, so the
# recorded answer is fresh; tests move it to age the cache.
START_MS = 1_747_833_614_000 + 30_000
MINUTE_MS = 60_000
# A provider that "hangs" answers after this long, far beyond the test timeouts.
HANG_SECONDS = 5.0
JSON = "application/json; charset=utf-8"


class Clock:
    def __init__(self, now: int = START_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


def coingecko_answer(price: str | None = None, *, as_of_ms: int | None = None) -> Reply:
    """The recorded CoinGecko answer, with ``price`` written as a raw JSON number and its
    ``last_updated_at`` moved to ``as_of_ms`` (a test that ages the cache must keep
    CoinGecko's own timestamp fresh, or the answer is rightly refused as stale)."""
    text = fixture_text("coingecko-simple-price-dash-usd.json")
    if price is not None:
        text = text.replace("22.153417692849753", price)
    if as_of_ms is not None:
        text = text.replace("1747833614", str(as_of_ms // 1000))
    return Reply(200, text, JSON)


def kraken_answer(price: str | None = None) -> Reply:
    data = json.loads(fixture_text("kraken-ticker-dashusd.json"))
    if price is not None:
        data["result"]["DASHUSD"]["c"][0] = price
    return Reply(200, json.dumps(data), JSON)


def coinbase_answer(price: str | None = None) -> Reply:
    data = json.loads(fixture_text("coinbase-spot-dash-usd.json"))
    if price is not None:
        data["data"]["amount"] = price
    return Reply(200, json.dumps(data), JSON)


ANSWERS = {"coingecko": coingecko_answer, "kraken": kraken_answer, "coinbase": coinbase_answer}
PATHS = {
    "coingecko": "api/v3/simple/price",
    "kraken": "0/public/Ticker",
    "coinbase": "v2/prices/DASH-USD/spot",
}
RECORDED = {
    "coingecko": Decimal("22.153417692849753"),
    "kraken": Decimal("22.14"),
    "coinbase": Decimal("22.135"),
}
HTML_PAGE = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head></html>"


def hang() -> Reply:
    return Reply(200, "{}", JSON, delay=HANG_SECONDS)


def down() -> Reply:
    return Reply(503, HTML_PAGE, "text/html")


@dataclass
class Providers:
    """Three loopback servers, one per provider, answering in its recorded format."""

    stubs: dict[str, InsightStub]

    def answer(self, name: str, *replies: Reply) -> None:
        self.stubs[name].route("GET", PATHS[name], *replies)

    def answer_all(self, make) -> None:
        for name in self.stubs:
            self.answer(name, make())

    def requests(self, name: str) -> list[Request]:
        return self.stubs[name].requests_to("GET", PATHS[name])

    def count(self) -> dict[str, int]:
        return {name: len(self.requests(name)) for name in self.stubs}

    def config(self, **prices: object) -> PricesConfig:
        table: dict[str, object] = {
            "timeout": "1s",
            **{name: {"url": stub.origin} for name, stub in self.stubs.items()},
        }
        table.update(prices)
        return config_from_dict({"prices": table}, env={}).prices


@pytest.fixture
def providers() -> Iterator[Providers]:
    stubs = {name: InsightStub(prefix="") for name in ANSWERS}
    for stub in stubs.values():
        stub.__enter__()
    found = Providers(stubs)
    for name, make in ANSWERS.items():
        found.answer(name, make())
    try:
        yield found
    finally:
        for stub in stubs.values():
            stub.__exit__(None, None, None)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    repository = SqliteRepository(tmp_path / "state" / "dashpay.sqlite3")
    repository.migrate()
    yield repository
    repository.close()


@asynccontextmanager
async def price_service(
    repo: Repository, config: PricesConfig, clock: Clock
) -> AsyncIterator[PriceService]:
    service = PriceService(repo, config, clock=clock)
    try:
        yield service
    finally:
        await service.aclose()


def warnings_about(caplog: pytest.LogCaptureFixture, provider: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "dashpay.prices"
        and r.levelno >= logging.WARNING
        and f"provider={provider}" in r.getMessage()
    ]


# -- each provider's format, over HTTP -----------------------------------------------


@pytest.mark.parametrize("name", list(ANSWERS))
async def test_each_providers_recorded_format_gives_its_exact_price(providers, repo, name):
    config = providers.config(providers=[name])
    async with price_service(repo, config, Clock()) as service:
        quote = await service.quote("USD")
    assert (quote.currency, quote.price, quote.provider) == ("USD", RECORDED[name], name)
    assert quote.fetched_at == START_MS
    request = providers.requests(name)[0]
    if name == "coingecko":
        assert request.query["ids"] == "dash" and request.query["vs_currencies"] == "usd"
    if name == "kraken":
        assert request.query == {"pair": "DASHUSD"}
    assert request.headers["user-agent"].startswith("dashpay/")
    stored = repo.get_quote("USD")
    assert (stored.price, stored.provider, stored.fetched_at) == (
        str(RECORDED[name]),
        name,
        START_MS,
    )


# -- strategy -----------------------------------------------------------------------


async def test_failover_tries_providers_in_order_until_one_answers(providers, repo):
    providers.answer("coingecko", down())
    providers.answer("kraken", hang())
    config = providers.config(timeout="300ms")
    async with price_service(repo, config, Clock()) as service:
        started = trio.current_time()
        quote = await service.quote("USD")
        elapsed = trio.current_time() - started
    assert quote.provider == "coinbase" and quote.price == RECORDED["coinbase"]
    asked = [providers.requests(name)[0].time for name in ("coingecko", "kraken", "coinbase")]
    assert asked == sorted(asked)
    assert asked[2] - asked[1] >= 0.25  # coinbase only after kraken's timeout
    assert elapsed < 2  # the hanging provider cost one timeout, not its 5 s


async def test_first_sane_answer_wins_and_later_providers_are_not_asked(providers, repo):
    async with price_service(repo, providers.config(), Clock()) as service:
        quote = await service.quote("USD")
    assert quote.provider == "coingecko"
    assert providers.count() == {"coingecko": 1, "kraken": 0, "coinbase": 0}


async def test_provider_order_comes_from_the_config(providers, repo):
    config = providers.config(providers=["coinbase", "coingecko"])
    async with price_service(repo, config, Clock()) as service:
        quote = await service.quote("USD")
    assert quote.provider == "coinbase"
    assert providers.count() == {"coingecko": 0, "kraken": 0, "coinbase": 1}


async def test_median_strategy_asks_all_at_once_and_takes_the_median(providers, repo):
    providers.answer("coingecko", coingecko_answer("22.0"))
    providers.answer(
        "kraken",
        kraken_answer("22.4"),
    )
    providers.answer("coinbase", coinbase_answer("23.0"))
    async with price_service(repo, providers.config(strategy="median"), Clock()) as service:
        quote = await service.quote("USD")
    assert quote.price == Decimal("22.4")
    assert quote.provider == "median(coingecko,kraken,coinbase)"
    assert repo.get_quote("USD").provider == "median(coingecko,kraken,coinbase)"


async def test_median_of_two_answers_is_their_exact_mean(providers, repo):
    providers.answer("coingecko", coingecko_answer("22.01"))
    providers.answer("kraken", down())
    providers.answer("coinbase", coinbase_answer("22.02"))
    async with price_service(repo, providers.config(strategy="median"), Clock()) as service:
        quote = await service.quote("USD")
    assert quote.price == Decimal("22.015")
    assert quote.provider == "median(coingecko,coinbase)"


async def test_median_requests_run_concurrently(providers, repo):
    for name in ANSWERS:
        answer = ANSWERS[name]()
        providers.answer(name, replace(answer, delay=0.4))
    async with price_service(repo, providers.config(strategy="median"), Clock()) as service:
        started = trio.current_time()
        await service.quote("USD")
        elapsed = trio.current_time() - started
    assert elapsed < 1.0  # three 0.4 s answers in parallel, not 1.2 s in a row


# -- hostile answers ----------------------------------------------------------------

HOSTILE = {
    "zero": coingecko_answer("0"),
    "zero with decimals": coingecko_answer("0.000"),
    "negative": coingecko_answer("-22.15"),
    "NaN": coingecko_answer("NaN"),
    "Infinity": coingecko_answer("Infinity"),
    "HTML page with 200": Reply(200, HTML_PAGE, "text/html"),
    "HTML error page": Reply(502, HTML_PAGE, "text/html"),
    "garbage": Reply(200, "dash=22.15;ok", "text/plain"),
    "truncated JSON": Reply(200, '{"dash":{"usd":22.1', JSON),
    "null price": Reply(200, '{"dash":{"usd":null}}', JSON),
    "price as text": Reply(200, '{"dash":{"usd":"22.15"}}', JSON),
    "array": Reply(200, "[22.15]", JSON),
    "changed shape": Reply(200, '{"data":{"price":22.15}}', JSON),
    "implausible": coingecko_answer("1e15"),
    "too many digits": coingecko_answer("22.1534176928497531234567890123456"),
    "huge body": Reply(200, '{"dash":{"usd":22.1,"x":"' + "x" * MAX_RESPONSE_BYTES + '"}}', JSON),
    "redirect": Reply(302, "", "text/plain", headers={"Location": "https://elsewhere/"}),
    "rate limited": Reply(429, fixture_text("coingecko-rate-limited.json"), JSON),
    "stale": Reply(200, '{"dash":{"usd":22.1,"last_updated_at":1700000000}}', JSON),
}


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_answer_is_rejected_with_a_log_line_naming_the_provider(
    providers, repo, caplog, case
):
    caplog.set_level(logging.INFO, logger="dashpay.prices")
    providers.answer("coingecko", HOSTILE[case])
    async with price_service(repo, providers.config(), Clock()) as service:
        quote = await service.quote("USD")
    assert quote.provider == "kraken" and quote.price == RECORDED["kraken"]
    assert warnings_about(caplog, "coingecko"), caplog.text


EVERY_PROVIDER_HOSTILE = {
    "zero": lambda name: ANSWERS[name]("0"),
    "negative": lambda name: ANSWERS[name]("-1"),
    "HTML page": lambda name: HOSTILE["HTML page with 200"],
    "garbage": lambda name: HOSTILE["garbage"],
}


@pytest.mark.parametrize("case", list(EVERY_PROVIDER_HOSTILE))
async def test_when_every_answer_is_hostile_there_is_no_price(providers, repo, case):
    for name in ANSWERS:
        providers.answer(name, EVERY_PROVIDER_HOSTILE[case](name))
    async with price_service(repo, providers.config(), Clock()) as service:
        with pytest.raises(PriceUnavailable) as caught:
            await service.quote("USD")
    message = caught.value.message
    assert "coingecko:" in message and "kraken:" in message and "coinbase:" in message
    assert "there is no cached price" in message
    assert repo.get_quote("USD") is None


async def test_outlier_is_rejected_when_the_next_provider_disagrees(providers, repo, caplog):
    caplog.set_level(logging.INFO, logger="dashpay.prices")
    clock = Clock()
    async with price_service(repo, providers.config(), clock) as service:
        first = await service.quote("USD")  # the last good quote: 22.15 from coingecko
        clock.advance(11 * MINUTE_MS)
        providers.answer("coingecko", coingecko_answer("44.30", as_of_ms=clock.now))  # +100 %
        quote = await service.quote("USD")
    assert first.provider == "coingecko"
    assert quote.provider == "kraken" and quote.price == RECORDED["kraken"]
    rejected = warnings_about(caplog, "coingecko")
    assert any("price rejected" in line and "44.3" in line for line in rejected), caplog.text


async def test_large_move_confirmed_by_another_provider_is_accepted(providers, repo, caplog):
    caplog.set_level(logging.INFO, logger="dashpay.prices")
    clock = Clock()
    async with price_service(repo, providers.config(), clock) as service:
        await service.quote("USD")
        clock.advance(11 * MINUTE_MS)
        # +35 %, and two providers agree: the market moved.
        providers.answer("coingecko", coingecko_answer("30.00", as_of_ms=clock.now))
        providers.answer("kraken", kraken_answer("30.20"))
        quote = await service.quote("USD")
    assert quote.provider == "coingecko" and quote.price == Decimal("30.00")
    assert any("price moved" in r.getMessage() for r in caplog.records)


async def test_lone_large_move_is_accepted_when_no_other_provider_answers(providers, repo):
    clock = Clock()
    async with price_service(repo, providers.config(), clock) as service:
        await service.quote("USD")
        clock.advance(11 * MINUTE_MS)
        providers.answer("coingecko", coingecko_answer("30.00", as_of_ms=clock.now))
        providers.answer("kraken", down())
        providers.answer("coinbase", down())
        quote = await service.quote("USD")
    assert quote.price == Decimal("30.00")  # nobody disagrees: the market moved


async def test_outliers_that_disagree_with_each_other_give_no_price(providers, repo):
    clock = Clock()
    async with price_service(repo, providers.config(), clock) as service:
        await service.quote("USD")
        clock.advance(11 * MINUTE_MS)
        providers.answer("coingecko", coingecko_answer("44.0", as_of_ms=clock.now))
        providers.answer("kraken", kraken_answer("11.0"))
        providers.answer("coinbase", down())
        with pytest.raises(PriceUnavailable, match="rejected 44"):
            await service.quote("USD")


async def test_median_drops_an_outlier_before_taking_the_median(providers, repo, caplog):
    caplog.set_level(logging.INFO, logger="dashpay.prices")
    clock = Clock()
    config = providers.config(strategy="median")
    async with price_service(repo, config, clock) as service:
        await service.quote("USD")  # median of the recorded answers: 22.15...
        clock.advance(11 * MINUTE_MS)
        providers.answer("coingecko", coingecko_answer(as_of_ms=clock.now))
        providers.answer("coinbase", coinbase_answer("2.2135"))  # a decimal point slipped
        quote = await service.quote("USD")
    assert quote.provider == "median(coingecko,kraken)"
    assert quote.price == (RECORDED["coingecko"] + RECORDED["kraken"]) / 2
    assert warnings_about(caplog, "coinbase")


# -- the persistent cache -------------------------------------------------------------


async def test_cached_quote_is_used_within_max_age_without_asking_anyone(providers, repo):
    clock = Clock()
    async with price_service(repo, providers.config(), clock) as service:
        fresh = await service.quote("USD")
        providers.answer_all(down)
        clock.advance(9 * MINUTE_MS + 59_000)
        before = providers.count()
        cached = await service.quote("USD")
        assert providers.count() == before  # no request at all
    assert cached == fresh


async def test_cached_quote_is_refused_after_max_age_naming_every_failure(providers, repo):
    clock = Clock()
    config = providers.config(timeout="300ms")
    async with price_service(repo, config, clock) as service:
        await service.quote("USD")
        providers.answer("coingecko", down())
        providers.answer("kraken", hang())
        providers.answer("coinbase", HOSTILE["HTML page with 200"])
        clock.advance(10 * MINUTE_MS + 30_000)
        with pytest.raises(PriceUnavailable) as caught:
            await service.quote("USD")
    error = caught.value
    assert error.kind == PRICE_UNAVAILABLE
    assert "coingecko: HTTP 503" in error.message
    assert "kraken: no answer within 300ms" in error.message
    assert "coinbase: the answer is an HTML page" in error.message
    assert "is 10m30s old, older than [prices] max_age = 10m" in error.message
    assert error.details["cache_age_seconds"] == 630
    assert set(error.details["failures"]) == {"coingecko", "kraken", "coinbase"}


@pytest.mark.parametrize("max_age, used", [("10m", True), ("5m", False)])
async def test_max_age_comes_from_the_config(providers, repo, max_age, used):
    clock = Clock()
    async with price_service(repo, providers.config(max_age=max_age), clock) as service:
        await service.quote("USD")
        providers.answer_all(down)
        clock.advance(6 * MINUTE_MS)
        if used:
            assert (await service.quote("USD")).provider == "coingecko"
        else:
            with pytest.raises(PriceUnavailable, match="older than"):
                await service.quote("USD")


async def test_cache_survives_a_restart_then_expires(providers, database_url):
    """A new daemon (new repository, new service) on the same database during an outage
    uses the stored quote while it is young enough, and refuses it after."""
    db = parse_database_url(database_url)
    clock = Clock()
    first = open_repository(db)
    first.migrate()
    async with price_service(first, providers.config(), clock) as service:
        fetched = await service.quote("USD")
    first.close()

    providers.answer_all(down)
    clock.advance(8 * MINUTE_MS)
    second = open_repository(db)
    try:
        async with price_service(second, providers.config(), clock) as service:
            before = providers.count()
            restarted = await service.quote("USD")
            assert providers.count() == before
            assert restarted == fetched
            clock.advance(3 * MINUTE_MS)
            with pytest.raises(PriceUnavailable, match="is 11m old, older than"):
                await service.quote("USD")
    finally:
        second.close()


async def test_refresher_loads_the_cache_and_keeps_quotes_fresh(providers, repo):
    clock = Clock()
    repo.save_quote(PriceQuote("USD", "20.5", "kraken", START_MS - 5 * MINUTE_MS))
    config = providers.config(refresh="200ms", currencies=["USD", "EUR"])
    providers.stubs["kraken"].route(
        "GET",
        PATHS["kraken"],
        lambda request: Reply(
            200,
            fixture_text("kraken-ticker-dashusd.json").replace("DASHUSD", request.query["pair"]),
            JSON,
        ),
    )
    providers.answer("coingecko", down())
    async with price_service(repo, config, clock) as service, trio.open_nursery() as nursery:
        await nursery.start(service.refresh_loop)
        # Loaded from the database before the first refresh: usable at once.
        assert service._quotes["USD"].price == Decimal("20.5")
        with trio.fail_after(5):
            while len(providers.requests("kraken")) < 4:  # USD and EUR, twice
                clock.advance(1000)
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert repo.get_quote("USD").price == "22.14"
    assert repo.get_quote("EUR").provider == "kraken"
    pairs = {r.query["pair"] for r in providers.requests("kraken")}
    assert pairs == {"DASHUSD", "DASHEUR"}


async def test_currency_asked_on_demand_is_fetched_once_then_refreshed(providers, repo):
    clock = Clock()
    config = providers.config(refresh="200ms", currencies=[], providers=["coinbase"])
    providers.stubs["coinbase"].route(
        "GET",
        "v2/prices/DASH-CHF/spot",
        Reply(
            200, json.dumps({"data": {"amount": "19.87", "base": "DASH", "currency": "CHF"}}), JSON
        ),
    )
    async with price_service(repo, config, clock) as service, trio.open_nursery() as nursery:
        await nursery.start(service.refresh_loop)
        chf = await service.quote("chf")
        assert chf.price == Decimal("19.87") and chf.currency == "CHF"
        with trio.fail_after(5):
            while (
                len(providers.stubs["coinbase"].requests_to("GET", "v2/prices/DASH-CHF/spot")) < 3
            ):
                clock.advance(1000)
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()


# -- unknown currencies -------------------------------------------------------------


async def test_currency_no_provider_quotes_is_invalid_params_without_a_request(providers, repo):
    config = providers.config(providers=["coingecko", "kraken"])
    async with price_service(repo, config, Clock()) as service:
        with pytest.raises(InvalidParams, match="no configured price provider quotes DASH in XYZ"):
            await service.quote("XYZ")
    assert providers.count() == {"coingecko": 0, "kraken": 0, "coinbase": 0}


async def test_currency_a_provider_says_it_does_not_quote_is_invalid_params(providers, repo):
    providers.stubs["coinbase"].route(
        "GET",
        "v2/prices/DASH-XYZ/spot",
        Reply(404, fixture_text("coinbase-spot-invalid-currency.json"), JSON),
    )
    async with price_service(repo, providers.config(), Clock()) as service:
        for _ in range(3):
            with pytest.raises(InvalidParams, match="XYZ"):
                await service.quote("XYZ")
    # Asked once; the answer is remembered instead of asking on every request.
    assert len(providers.stubs["coinbase"].requests_to("GET", "v2/prices/DASH-XYZ/spot")) == 1


@pytest.mark.parametrize("code", ["US", "USDT", "DASH", "1SD", ""])
async def test_malformed_currency_code_is_invalid_params(providers, repo, code):
    async with price_service(repo, providers.config(), Clock()) as service:
        with pytest.raises(InvalidParams):
            await service.quote(code)


# -- conversion ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount, price",
    [("25", "22.135"), ("0.01", "22.135"), ("19.99", "7.000001"), ("1000000", "0.333")],
)
async def test_conversion_at_a_served_price_rounds_up_to_the_duff(providers, repo, amount, price):
    providers.answer("coingecko", coingecko_answer(price))
    async with price_service(repo, providers.config(), Clock()) as service:
        conversion = await service.convert(Decimal(amount), "USD")
    assert conversion.amount_duffs == fiat_to_duffs(Decimal(amount), Decimal(price))
    assert conversion.amount_duffs * Decimal(price) >= Decimal(amount) * 100_000_000
    assert (conversion.amount_duffs - 1) * Decimal(price) < Decimal(amount) * 100_000_000
    assert (conversion.fiat_amount, conversion.fiat_currency) == (amount, "USD")
    assert Decimal(conversion.rate) == Decimal(price)
    assert (conversion.rate_provider, conversion.rate_fetched_at) == ("coingecko", START_MS)


# -- outages and concurrency --------------------------------------------------------


async def test_concurrent_conversions_during_an_outage_never_wait_on_the_network(providers, repo):
    clock = Clock()
    config = providers.config(refresh="200ms", timeout="3s")
    async with price_service(repo, config, clock) as service, trio.open_nursery() as nursery:
        await service.quote("USD")
        providers.answer_all(hang)
        clock.advance(5 * MINUTE_MS)  # stale enough to be refreshed, young enough to use
        await nursery.start(service.refresh_loop)
        with trio.fail_after(3):
            while not providers.count()["coingecko"] > 1:
                await trio.sleep(0.01)  # the refresher is now stuck on a hanging provider
        results = []

        async def create() -> None:
            results.append(await service.convert(Decimal("25"), "USD"))

        with trio.fail_after(0.5):
            async with trio.open_nursery() as creations:
                for _ in range(50):
                    creations.start_soon(create)
        nursery.cancel_scope.cancel()
    assert len(results) == 50
    assert {r.amount_duffs for r in results} == {fiat_to_duffs(Decimal(25), RECORDED["coingecko"])}


async def test_concurrent_requests_without_a_usable_quote_share_one_fetch_then_fail_fast(
    providers, repo
):
    providers.answer_all(hang)
    config = providers.config(timeout="200ms")
    async with price_service(repo, config, Clock()) as service:
        outcomes: list[BaseException] = []

        async def ask() -> None:
            try:
                await service.quote("USD")
            except DashpayError as exc:
                outcomes.append(exc)

        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(ask)
        assert len(outcomes) == 20
        assert all(isinstance(e, PriceUnavailable) for e in outcomes)
        assert providers.count() == {"coingecko": 1, "kraken": 1, "coinbase": 1}

        outcomes.clear()
        with trio.fail_after(0.2):  # the failure is reused: no provider timeout again
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(ask)
        assert len(outcomes) == 20
        assert providers.count() == {"coingecko": 1, "kraken": 1, "coinbase": 1}


# -- price.get and the CLI ------------------------------------------------------------


async def test_price_get_reports_each_quote_or_its_error(providers, repo):
    clock = Clock()
    config = providers.config(providers=["coingecko", "coinbase"])
    async with price_service(repo, config, clock) as service:
        result = await rpc("price.get", {"currencies": ["usd", "JPY"]}, prices=service)
        assert [q["currency"] for q in result["quotes"]] == ["USD", "JPY"]
        usd = result["quotes"][0]
        assert usd["price"] == str(RECORDED["coingecko"]) and usd["provider"] == "coingecko"
        assert usd["age_seconds"] == 0 and usd["fresh"] is True
        assert usd["fetched_at"].endswith("Z")
        jpy = result["quotes"][1]
        assert jpy["error"]["kind"] == PRICE_UNAVAILABLE  # no route: 404 from both
        assert result["strategy"] == "first" and result["providers"] == ["coingecko", "coinbase"]
        with pytest.raises(InvalidParams):
            await rpc("price.get", {"currencies": "USD"}, prices=service)
        with pytest.raises(InvalidParams):
            await rpc("price.get", {"currency": ["USD"]}, prices=service)
        default = await rpc("price.get", {}, prices=service)
        assert [q["currency"] for q in default["quotes"]] == ["USD", "JPY"]


CLI = """
import sys, typer
from dashpay.cli.app import JSON_HELP, app, main

@app.command()
def price(
    ctx: typer.Context,
    currencies: list[str] | None = typer.Argument(None, help="Currency codes."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    from dashpay.cli.prices import price_command
    price_command(ctx, currencies, as_json)

sys.argv[0] = "dashpay"
main()
"""


async def test_price_command_shows_quotes_over_the_control_socket(providers, repo, short_tmp):
    """`dashpay price`, registered as the lead's cli.py will, run as a real process
    against a real control socket served by a PriceService."""
    clock = Clock()
    providers.answer("coingecko", down())
    service_config = providers.config(providers=["coingecko", "kraken"])
    path = short_tmp / "control.sock"
    async with price_service(repo, service_config, clock) as service:

        async def handle(method: str, params: dict) -> object:
            assert method == "price.get"
            return await rpc("price.get", params, prices=service)

        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_control, path, handle))

            async def run(*args: str) -> subprocess.CompletedProcess:
                command = [sys.executable, "-c", CLI, "--socket", str(path), "price", *args]
                return await trio.run_process(
                    command,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env=cli_env(),
                    cwd=REPO,
                )

            shown = await run("USD")
            as_json = await run("usd", "--json")
            unknown = await run("XYZ")
            unavailable = await run("EUR")
            bad = await run("DOLLARS")
            nursery.cancel_scope.cancel()
    assert shown.returncode == 0, shown.stderr
    assert "22.14 USD" in shown.stdout.decode() and "kraken" in shown.stdout.decode()
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout)["quotes"][0]["price"] == "22.14"
    assert unknown.returncode == 2, unknown.stderr  # invalid_params: nobody quotes XYZ
    assert "no configured price provider quotes DASH in XYZ" in unknown.stderr.decode()
    assert unavailable.returncode == 5, unavailable.stderr  # price_unavailable
    assert "no fresh DASH price in EUR" in unavailable.stderr.decode()
    assert bad.returncode == 2 and b"not a fiat currency code" in bad.stderr


# -- the daemon ---------------------------------------------------------------------


def test_fiat_receivers_through_the_daemon_survive_an_outage_and_a_restart(
    providers, short_tmp, database_url
):
    """`dashpay serve` with [prices.*] pointing at the loopback providers: a USD receiver
    stores both amounts; during an outage, and after a restart, the cached quote still
    prices receivers; `dashpay price` shows it. Skipped until daemon.py wires the
    PriceService (price.get answers)."""
    import time as wall

    from tests.conftest import start_daemon, wait_receivers, write_config

    now_ms = wall.time_ns() // 1_000_000
    providers.answer("coingecko", coingecko_answer(as_of_ms=now_ms))
    tables = {f"prices.{name}": {"url": stub.origin} for name, stub in providers.stubs.items()}
    config = write_config(short_tmp, database_url, prices={"timeout": "1s"}, **tables)
    daemon = start_daemon(config, ready=False)
    try:
        wait_receivers(daemon)
        probe = daemon.cli("price", "USD", "--json")
        if probe.code != 0 and (
            "not available" in probe.stderr or "No such command" in probe.stderr
        ):
            pytest.skip(f"the daemon does not serve price.get yet: {probe.stderr.strip()}")
        assert probe.code == 0, probe.stderr
        assert probe.json()["quotes"][0]["provider"] == "coingecko"

        created = daemon.cli("receiver", "new", "--amount", "25", "--currency", "USD", "--json")
        assert created.code == 0, created.stderr
        receiver = created.json()
        price = RECORDED["coingecko"]
        assert receiver["amount_duffs"] == fiat_to_duffs(Decimal(25), price)
        assert (receiver["fiat_amount"], receiver["fiat_currency"]) == ("25", "USD")
        assert Decimal(receiver["rate"]) == price and receiver["rate_provider"] == "coingecko"
        shown = daemon.cli("receiver", "show", str(receiver["receiver_id"]))
        assert f"{receiver['amount_dash']} DASH (25 USD)" in shown.stdout

        providers.answer_all(down)  # outage: the cached quote is young enough
        during = daemon.cli("receiver", "new", "--amount", "10", "--currency", "usd", "--json")
        assert during.code == 0, during.stderr
        assert during.json()["rate"] == receiver["rate"]
        assert daemon.stop() == 0

        daemon = start_daemon(config, ready=False)  # restart during the outage
        wait_receivers(daemon)
        after = daemon.cli("receiver", "new", "--amount", "10", "--currency", "USD", "--json")
        assert after.code == 0, after.stderr
        assert after.json()["rate_fetched_at"] == receiver["rate_fetched_at"]
        in_dash = daemon.cli("receiver", "new", "--amount", "0.5", "--json")
        assert in_dash.code == 0 and in_dash.json()["fiat_currency"] is None
        unknown = daemon.cli("receiver", "new", "--amount", "10", "--currency", "XYZ")
        assert unknown.code in (2, 5), unknown.stderr  # 2 once Coinbase said "Invalid currency"
    finally:
        daemon.stop()
