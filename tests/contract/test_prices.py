"""The price cache contract (dashpay.repository.prices), on SQLite and on MariaDB."""

from __future__ import annotations

import threading

import pytest

from dashpay.domain.errors import InvalidParams
from dashpay.repository.prices import PriceQuote


def quote(currency="USD", price="22.135", provider="coinbase", fetched_at=1_747_833_614_000):
    return PriceQuote(currency, price, provider, fetched_at)


def test_saved_quote_reads_back_exactly(repo):
    saved = repo.save_quote(quote())
    assert saved == quote()
    assert repo.get_quote("USD") == quote()


def test_currency_without_a_quote_has_none(repo):
    assert repo.get_quote("EUR") is None
    assert repo.list_quotes() == []


@pytest.mark.parametrize(
    "price",
    ["22.153417692849753", "0.000001", "999999999999.123456789", "25", "0.10000000"],
)
def test_price_text_is_stored_digit_for_digit(repo, price):
    repo.save_quote(quote(price=price))
    assert repo.get_quote("USD").price == price


def test_newer_quote_replaces_the_cached_one(repo):
    repo.save_quote(quote(price="22.1", provider="coingecko", fetched_at=1000))
    stored = repo.save_quote(
        quote(price="23.4", provider="median(kraken,coinbase)", fetched_at=2000)
    )
    assert stored == quote(price="23.4", provider="median(kraken,coinbase)", fetched_at=2000)
    assert repo.get_quote("USD") == stored


def test_older_quote_does_not_replace_a_newer_one(repo):
    newer = repo.save_quote(quote(price="23.4", fetched_at=2000))
    stored = repo.save_quote(quote(price="22.1", provider="kraken", fetched_at=1000))
    assert stored == newer
    assert repo.get_quote("USD") == newer


def test_quote_of_the_same_millisecond_replaces_the_stored_one(repo):
    repo.save_quote(quote(price="22.1", fetched_at=2000))
    stored = repo.save_quote(quote(price="22.2", provider="kraken", fetched_at=2000))
    assert stored.price == "22.2" and stored.provider == "kraken"


def test_each_currency_has_its_own_quote_listed_by_code(repo):
    repo.save_quote(quote("USD", "22.1"))
    repo.save_quote(quote("EUR", "20.4", "kraken"))
    repo.save_quote(quote("CHF", "19.9", "coingecko"))
    assert [q.currency for q in repo.list_quotes()] == ["CHF", "EUR", "USD"]
    assert repo.get_quote("EUR") == quote("EUR", "20.4", "kraken")


def test_cached_quote_survives_reopening_the_database(store, repo):
    repo.save_quote(quote())
    repo.close()
    reopened = store.open()
    assert reopened.get_quote("USD") == quote()
    assert reopened.list_quotes() == [quote()]


@pytest.mark.parametrize(
    "bad",
    [
        quote(currency="usd"),
        quote(currency="USDT"),
        quote(currency="US"),
        quote(price="0"),
        quote(price="0.000"),
        quote(price="-1"),
        quote(price="1e5"),
        quote(price="NaN"),
        quote(price="Infinity"),
        quote(price=""),
        quote(price=" 22.1"),
        quote(price="1" * 65),
        quote(provider=""),
        quote(provider="Kraken"),
        quote(provider="x" * 65),
        quote(provider="kraken; DROP TABLE"),
        quote(fetched_at=-1),
        quote(fetched_at=True),
        quote(fetched_at=1.5),
    ],
)
def test_malformed_quote_is_refused_and_nothing_is_stored(repo, bad):
    with pytest.raises(InvalidParams):
        repo.save_quote(bad)
    assert repo.list_quotes() == []


@pytest.mark.parametrize("currency", ["usd", "USDT", "", None, "U$D"])
def test_get_quote_refuses_a_malformed_currency(repo, currency):
    with pytest.raises(InvalidParams):
        repo.get_quote(currency)


def test_concurrent_writers_leave_the_newest_quote(store, repo):
    """Two daemons (HA) refreshing at once: whatever the interleaving, the newest wins."""
    other = store.open()
    errors: list[BaseException] = []

    def write(repository, start: int) -> None:
        try:
            for step in range(20):
                at = start + step * 2
                repository.save_quote(quote(price=f"{20 + step}.{start % 2}", fetched_at=at))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(repo, 1000)),
        threading.Thread(target=write, args=(other, 1001)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert repo.get_quote("USD") == quote(price="39.1", fetched_at=1039)
