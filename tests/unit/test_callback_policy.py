"""The retry policy of callbacks as pure functions: which answers are retried, when the
next attempt is, Retry-After, the give-up horizon, and why a target is refused."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from dashpay.config.model import CallbacksConfig
from dashpay.domain.status import OUTBOX_DELIVERED, OUTBOX_FAILED, OUTBOX_PENDING
from dashpay.net.guard import refusal_reason
from dashpay.services.callbacks.policy import Delivery, plan_outcome
from dashpay.services.callbacks.sender import display_origin, origin_of
from dashpay.wire.http1 import retry_after_seconds

RULES = CallbacksConfig(backoff_initial=10, backoff_max=3600, give_up_after=3 * 86400)
T0 = 1_700_000_000_000  # epoch ms


def plan(delivery: Delivery, *, at: int = T0, first: int | None = None, now: int | None = None):
    return plan_outcome(
        RULES,
        delivery,
        attempted_at=at,
        first_attempt_at=first,
        attempts_before=0,
        now=at if now is None else now,
    )


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status):
    outcome = plan(Delivery(status, None, 15))
    assert outcome.status == OUTBOX_DELIVERED and outcome.http_status == status
    assert outcome.duration_ms == 15 and outcome.next_attempt_at is None


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_are_retried(status):
    outcome = plan(Delivery(status, f"HTTP {status}", 5))
    assert outcome.status == OUTBOX_PENDING and outcome.next_attempt_at == T0 + 10_000


@pytest.mark.parametrize("status", [301, 302, 307, 400, 401, 403, 404, 409, 410, 422])
def test_redirects_and_other_client_errors_fail_at_once(status):
    outcome = plan(Delivery(status, f"HTTP {status}", 5))
    assert outcome.status == OUTBOX_FAILED and outcome.error == f"HTTP {status}"


def test_network_errors_are_retried_and_refusals_are_not():
    assert plan(Delivery(None, "cannot connect: refused", 1)).status == OUTBOX_PENDING
    assert plan(Delivery(None, "refused: link-local", 0, refused=True)).status == OUTBOX_FAILED


def test_delays_double_from_the_initial_back_off_up_to_the_cap():
    first, now, delays = T0, T0, []
    for _ in range(12):
        outcome = plan(Delivery(500, "HTTP 500", 0), at=now, first=first)
        delays.append((outcome.next_attempt_at - now) // 1000)
        now = outcome.next_attempt_at
    assert delays == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600, 3600]


def test_retry_after_can_lengthen_the_wait_but_never_shorten_it():
    longer = plan(Delivery(429, "HTTP 429", 0, retry_after=120.0))
    assert longer.next_attempt_at == T0 + 120_000
    shorter = plan(Delivery(503, "HTTP 503", 0, retry_after=1.0))
    assert shorter.next_attempt_at == T0 + 10_000


def test_the_last_attempt_is_made_at_the_horizon_then_the_event_fails():
    horizon = T0 + 3 * 86400 * 1000
    near = plan(Delivery(500, "HTTP 500", 0), at=horizon - 5_000, first=T0)
    assert near.status == OUTBOX_PENDING and near.next_attempt_at == horizon
    long_wait = plan(Delivery(429, "HTTP 429", 0, retry_after=10**9), at=T0 + 1000, first=T0)
    assert long_wait.next_attempt_at == horizon  # a huge Retry-After is bounded too
    last = plan(Delivery(500, "HTTP 500", 0), at=horizon, first=T0)
    assert last.status == OUTBOX_FAILED
    assert last.error == "HTTP 500 (gave up after 1 attempts in 3d)"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("-5", None),
        ("soon", None),
        ("1.5", None),
        ("9" * 40, 999_999_999_999.0),
        ("²", None),  # a digit to str.isdigit, not to int()
        ("１２", None),  # fullwidth digits: not delay-seconds either
    ],
)
def test_retry_after_in_seconds(value, seconds):
    assert retry_after_seconds(value, 1_000.0) == seconds


def test_retry_after_as_an_http_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2026, 1, 1, 12, 1, 30, tzinfo=UTC), usegmt=True)
    assert retry_after_seconds(later, now) == 90.0
    earlier = format_datetime(datetime(2025, 12, 31, tzinfo=UTC), usegmt=True)
    assert retry_after_seconds(earlier, now) == 0.0
    # "-0000" makes a naive datetime: an HTTP-date is UTC all the same
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:10 -0000", now) == 10.0


@pytest.mark.parametrize(
    ("settings", "address", "needle"),
    [
        ({}, "169.254.169.254", "block_link_local"),
        ({}, "fd00:ec2::254", "cloud metadata"),
        ({}, "224.0.0.1", "multicast"),
        ({"allow_private_targets": False}, "10.1.2.3", "allow_private_targets"),
        ({"allow_private_targets": False}, "::1", "allow_private_targets"),
    ],
)
def test_refused_addresses_say_why(settings, address, needle):
    reason = refusal_reason(ipaddress.ip_address(address), CallbacksConfig(**settings))
    assert reason is not None and needle in reason


def test_allowed_addresses_have_no_refusal():
    assert refusal_reason(ipaddress.ip_address("93.184.216.34"), CallbacksConfig()) is None
    assert refusal_reason(ipaddress.ip_address("127.0.0.1"), CallbacksConfig()) is None


def test_a_logged_origin_never_shows_credentials_path_or_query():
    url = "https://user:s3cret@Shop.Example:8443/hook/abc?token=t0ken"
    assert display_origin(url) == "https://shop.example:8443"
    assert display_origin("http://[::1]/cb") == "http://[::1]"
    assert display_origin("http://shop.example:80/cb") == "http://shop.example"
    assert display_origin("https://shop.example:80/cb") == "https://shop.example:80"


def test_a_default_port_written_out_is_the_same_origin():
    assert origin_of("http://Shop.Example/a") == origin_of("HTTP://shop.example:80/b?x=1")
    assert origin_of("https://shop.example/") == ("https", "shop.example", 443)
    assert origin_of("https://shop.example:80/") != origin_of("http://shop.example/")
