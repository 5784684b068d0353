"""The failed-authentication limiter (dashpay.domain.ratelimit): a token bucket per
client address, driven by an explicit clock."""

from __future__ import annotations

import pytest

from dashpay.domain.ratelimit import FailedAuthLimiter, address_key


def fail(limiter: FailedAuthLimiter, address: str, times: int, now: float = 0.0) -> None:
    for _ in range(times):
        limiter.record_failure(address, now)


def test_ten_failures_are_allowed_then_the_address_waits():
    limiter = FailedAuthLimiter()
    for _ in range(10):
        assert limiter.allow("203.0.113.5", 0.0)
        limiter.record_failure("203.0.113.5", 0.0)
    assert not limiter.allow("203.0.113.5", 0.0)
    assert limiter.retry_after("203.0.113.5", 0.0) == pytest.approx(6.0)
    assert limiter.retry_after_header("203.0.113.5", 0.0) == "6"


def test_one_more_attempt_every_six_seconds():
    limiter = FailedAuthLimiter()
    fail(limiter, "203.0.113.5", 10)
    assert not limiter.allow("203.0.113.5", 5.9)
    assert limiter.retry_after("203.0.113.5", 5.0) == pytest.approx(1.0)
    assert limiter.allow("203.0.113.5", 6.0)
    limiter.record_failure("203.0.113.5", 6.0)
    assert not limiter.allow("203.0.113.5", 6.0)
    assert limiter.allow("203.0.113.5", 12.0)
    assert limiter.allow("203.0.113.5", 66.0) and limiter.retry_after("203.0.113.5", 66.0) == 0


def test_other_addresses_are_not_affected():
    limiter = FailedAuthLimiter()
    fail(limiter, "203.0.113.5", 20)
    assert limiter.allow("203.0.113.6", 0.0)
    assert limiter.retry_after("203.0.113.6", 0.0) == 0.0
    assert len(limiter) == 1  # asking costs nothing


def test_a_burst_of_concurrent_failures_waits_at_most_two_windows():
    limiter = FailedAuthLimiter()
    fail(limiter, "203.0.113.5", 500)
    assert limiter.retry_after("203.0.113.5", 0.0) == pytest.approx(66.0)
    assert limiter.allow("203.0.113.5", 66.0)


def test_a_clock_going_backwards_gives_nothing_back():
    limiter = FailedAuthLimiter()
    fail(limiter, "203.0.113.5", 10, now=100.0)
    assert not limiter.allow("203.0.113.5", 50.0)
    limiter.record_failure("203.0.113.5", 50.0)
    assert limiter.retry_after("203.0.113.5", 100.0) == pytest.approx(12.0)


def test_an_ipv6_client_counts_as_its_slash_64():
    limiter = FailedAuthLimiter()
    for host in range(10):
        limiter.record_failure(f"2001:db8:1:2::{host + 1:x}", 0.0)
    assert not limiter.allow("2001:db8:1:2:ffff::1", 0.0)
    assert limiter.allow("2001:db8:1:3::1", 0.0)
    assert address_key("::ffff:203.0.113.5") == "203.0.113.5"
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("unix:/run/x") == "unix:/run/x"


def test_memory_is_bounded_and_full_buckets_are_forgotten_first():
    limiter = FailedAuthLimiter(max_addresses=3)
    limiter.record_failure("10.0.0.1", 0.0)
    fail(limiter, "10.0.0.2", 10, now=59.0)
    limiter.record_failure("10.0.0.3", 59.5)
    # At 60 s, 10.0.0.1 is full again (since 6 s): it goes, the others stay.
    limiter.record_failure("10.0.0.4", 60.0)
    assert len(limiter) == 3
    assert not limiter.allow("10.0.0.2", 60.0)
    # Nothing is full again: the oldest failure goes, the table stays at its cap.
    for n in range(5, 100):
        limiter.record_failure(f"10.0.1.{n}", 61.0)
        assert len(limiter) <= 3
    assert limiter.allow("10.0.0.2", 61.0)  # forgotten early, as documented


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        FailedAuthLimiter(0)
    with pytest.raises(ValueError):
        FailedAuthLimiter(10, 0)
    with pytest.raises(ValueError):
        FailedAuthLimiter(max_addresses=0)
