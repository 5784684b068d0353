"""The checkout page's message catalogue, language choice, live events, cache rules
and per-client rate limit (dashpay/api/checkout)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dashpay.api.checkout import catalogue
from dashpay.api.checkout.events import KEEPALIVE, RETRY_MS, page_values, sse_frame
from dashpay.api.checkout.policy import (
    PageRateLimiter,
    cache_headers,
    cacheable,
    event_stream_headers,
)
from dashpay.api.checkout.qr import qr_data_uri
from dashpay.api.checkout.state import VIEWS, checkout_state
from dashpay.domain.status import CANCELLED, EXPIRED, FINAL_STATUSES, PAID, PENDING, SETTLED
from tests.unit.test_checkout_page import CASES, HOSTILE, NOW, receiver

CHECKOUT = Path(__file__).resolve().parents[2] / "dashpay" / "api" / "checkout"


# -- the catalogue ---------------------------------------------------------------------


def test_english_and_another_language_are_shipped():
    assert {"en", "de"} <= set(catalogue.languages())


@pytest.mark.parametrize("language", catalogue.languages())
def test_every_language_has_every_key_with_the_same_placeholders(language):
    english = catalogue.catalogues()["en"]
    table = catalogue.catalogues()[language]
    assert set(table) == set(english)
    for key, text in english.items():
        assert table[key].strip(), (language, key)
        assert catalogue.placeholders(table[key]) == catalogue.placeholders(text), key


def test_every_view_has_a_title_and_a_text_and_every_placeholder_a_value():
    english = catalogue.catalogues()["en"]
    for view in VIEWS:
        assert f"view.{view}.title" in english and f"view.{view}.text" in english
    en = catalogue.messages("en")
    known = set(page_values(checkout_state(CASES["waiting"][0], [], NOW), en)) | {
        "uri",
        "minutes",
        "seconds",
    }
    for key, text in english.items():
        assert catalogue.placeholders(text) <= known, key


def test_every_key_the_page_and_its_script_use_is_in_the_catalogue():
    used = set()
    for name in ("page.py", "assets/checkout.js"):
        source = (CHECKOUT / name).read_text()
        used |= set(re.findall(r'(?<![\w])(?:t\(|texts\[|text\()f?"([a-z_.]+)"', source))
    used = {key for key in used if not key.endswith(".")}
    assert used and used <= set(catalogue.catalogues()["en"])


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "en"),
        ("", "en"),
        ("de", "de"),
        ("de-CH", "de"),
        ("DE-de", "de"),
        ("fr-CH, fr;q=0.9, de;q=0.8, *;q=0.5", "de"),
        ("en;q=0.9, de", "de"),
        ("de;q=0, en", "en"),
        ("de;q=0.5, en;q=0.5", "de"),  # equal weights: the first listed wins
        ("*", "en"),
        ("xx, yy", "en"),
        ("de;q=abc", "en"),
        ("de;q=7", "en"),
        ("<script>, de", "de"),
        ("x" * 10_000 + ",de", "en"),  # only the first KiB is read
    ],
)
def test_the_language_comes_from_accept_language_with_english_fallback(header, language):
    assert catalogue.negotiate(header) == language


@pytest.mark.parametrize(
    "canonical, english, german",
    [
        ("0", "0", "0"),
        ("1.5", "1.5", "1,5"),
        ("0.00000001", "0.00000001", "0,00000001"),
        ("999", "999", "999"),
        ("1000", "1,000", "1.000"),
        ("1234.5", "1,234.5", "1.234,5"),
        ("21000000.12345678", "21,000,000.12345678", "21.000.000,12345678"),
        ("-1234", "-1,234", "-1.234"),
    ],
)
def test_numbers_are_written_as_the_language_writes_them(canonical, english, german):
    assert catalogue.local_number(canonical, catalogue.messages("en")) == english
    assert catalogue.local_number(canonical, catalogue.messages("de")) == german


@pytest.mark.parametrize("text", ["", "1e5", "1.", ".5", "1,5", " 1", "1.5.2", "NaN"])
def test_only_a_canonical_decimal_is_localised(text):
    with pytest.raises(ValueError, match="canonical decimal"):
        catalogue.local_number(text, catalogue.messages("de"))


# -- live events -----------------------------------------------------------------------


def parse_frame(frame: bytes) -> dict[str, str]:
    text = frame.decode("ascii")
    assert text.endswith("\n\n") and "\n\n" not in text[:-2]
    fields = {}
    for line in text[:-2].split("\n"):
        name, _, value = line.partition(": ")
        assert name not in fields
        fields[name] = value
    return fields


def test_an_event_carries_the_state_the_script_applies():
    r, payments = CASES["partly_paid"]
    state = checkout_state(r, payments, NOW)
    fields = parse_frame(sse_frame(state, catalogue.messages("en")))
    assert fields["event"] == "state" and "retry" not in fields
    data = json.loads(fields["data"])
    assert data["view"] == "partly_paid" and data["due_dash"] == "1"
    assert data["uri"] == f"dash:{r.address}?amount=1"
    assert data["qr"] == qr_data_uri(data["uri"])  # a new QR code for the remainder
    assert data["now"] == NOW and data["expires_at"] == r.expires_at
    assert parse_frame(sse_frame(state, catalogue.messages("en"), retry=True))["retry"] == str(
        RETRY_MS
    )
    german = json.loads(parse_frame(sse_frame(state, catalogue.messages("de")))["data"])
    assert german["uri"] == data["uri"] and german["due_dash"] == data["due_dash"] == "1"
    assert german["received_shown"] == "0,5" and data["received_shown"] == "0.5"
    assert KEEPALIVE.startswith(b":") and KEEPALIVE.endswith(b"\n\n")


def test_an_event_carries_nothing_else_and_cannot_be_split():
    r = receiver(PAID, 150_000_000, description=HOSTILE + "\n\ndata: forged\r\n")
    fields = parse_frame(sse_frame(checkout_state(r, [], NOW), catalogue.messages("en")))
    data = json.loads(fields["data"])
    assert set(data) == {
        "view",
        "final",
        "amount_dash",
        "received_dash",
        "due_dash",
        "overpaid_dash",
        "amount_shown",
        "received_shown",
        "due_shown",
        "overpaid_shown",
        "fiat_shown",
        "uri",
        "expires_at",
        "now",
        "address",
        "qr",
    }
    assert data["qr"] is None  # nothing is due any more
    assert "secret" not in fields["data"] and "Order" not in fields["data"]


# -- caching and headers ---------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_final_states_are_cacheable_privately_and_the_rest_never(name):
    r, payments = CASES[name]
    state = checkout_state(r, payments, NOW)
    headers = dict(cache_headers(state))
    assert headers["Vary"] == "Accept-Language"
    assert cacheable(state) == (r.status in FINAL_STATUSES)
    if r.status in (SETTLED, CANCELLED):
        assert headers["Cache-Control"] == "private, max-age=3600"
    elif r.status == EXPIRED:  # can still be paid late: kept only briefly
        assert headers["Cache-Control"] == "private, max-age=30"
    else:
        assert r.status in (PENDING, PAID) or name == "partly_paid"
        assert headers["Cache-Control"] == "no-store"


def test_the_event_stream_is_never_cached_or_buffered():
    headers = dict(event_stream_headers())
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["Cache-Control"] == "no-store" and headers["X-Accel-Buffering"] == "no"


# -- the per-client rate limit ---------------------------------------------------------


def test_a_client_gets_its_burst_then_one_request_per_interval():
    limiter = PageRateLimiter(burst=3, every=2.0)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after("a", 0.0) == 2
    assert limiter.allow("b", 0.0)  # another client has its own allowance
    assert not limiter.allow("a", 1.9)
    assert limiter.allow("a", 2.1) and not limiter.allow("a", 2.2)
    assert limiter.allow("a", 100.0) and limiter.retry_after("a", 100.0) == 0


def test_the_limiter_forgets_the_least_recently_seen_clients():
    limiter = PageRateLimiter(burst=1, every=60.0, max_clients=2)
    assert limiter.allow("a", 0.0) and limiter.allow("b", 0.0) and limiter.allow("c", 0.0)
    assert len(limiter._buckets) == 2
    assert limiter.allow("a", 0.0)  # forgotten: starts afresh
    assert not limiter.allow("c", 0.0)


def test_an_ipv6_client_counts_as_its_64_network_for_the_page_too():
    limiter = PageRateLimiter(burst=2, every=60.0)
    assert limiter.allow("2001:db8:1:2::1", 0.0) and limiter.allow("2001:db8:1:2::ffff", 0.0)
    assert not limiter.allow("2001:db8:1:2:aaaa::3", 0.0)  # same /64: the burst is spent
    assert limiter.retry_after("2001:db8:1:2::7", 0.0) == 60  # one request a minute
    assert limiter.allow("2001:db8:1:3::1", 0.0)  # another /64
