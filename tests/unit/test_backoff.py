"""The one retry-spacing policy (dashpay/domain/backoff.py).

Proves: exact doubling to the cap without jitter (the database and rescan retries),
half-to-full jitter with it (the Insight socket and REST), reset after a success, no
overflow after many failures, and refusal of settings that would loop tightly. And the
Insight socket's ``ReconnectPolicy``: fast refusals retried within a second however
long they last, slow failures backed off to the cap, a stable link's drop starting
over (kicks a few seconds apart never grow the delay), a link dropped at once backing
off, and the two counts kept apart.
"""

from __future__ import annotations

import pytest

from dashpay.domain.backoff import (
    DB_DOWN_LOG_INTERVAL,
    FAST_REFUSAL_SECONDS,
    REFUSED_RETRY_CAP,
    STABLE_LINK_SECONDS,
    Backoff,
    Outage,
    ReconnectPolicy,
    database_backoff,
    exponential_delay,
    jittered,
)

ALMOST_ONE = 0.999999  # the rng's largest draw: a delay's upper bound


def test_without_jitter_delays_double_up_to_the_cap_and_reset():
    backoff = Backoff(0.5, 30.0, jitter=False)
    assert [backoff.next_delay() for _ in range(9)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0
    ]  # fmt: skip
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_without_jitter_it_matches_the_doubling_loops_it_replaces():
    # The loops this policy replaced: ``delay = min(delay * 2, MAX)`` from INITIAL.
    for initial, cap in [(0.5, 30.0), (2.0, 120.0), (0.3, 1.0), (1.0, 1.0)]:
        backoff = Backoff(initial, cap, jitter=False)
        delay = initial
        for _ in range(20):
            assert backoff.next_delay() == delay
            delay = min(delay * 2, cap)


def test_with_jitter_each_delay_is_between_half_and_all_of_the_step():
    values = iter([0.0, 0.999999, 0.5] * 4)
    backoff = Backoff(1.0, 8.0, rng=lambda: next(values))
    delays = [backoff.next_delay() for _ in range(6)]
    assert delays[0] == 0.5 and delays[2] == 3.0 and delays[3] == 4.0
    assert 2.0 > delays[1] > 1.99 and 8.0 > delays[4] > 7.99
    for step, delay in zip([1, 2, 4, 8, 8, 8], delays, strict=True):
        assert step / 2 <= delay < step


def test_the_pure_helpers():
    assert [exponential_delay(n, 0.25, 3.0) for n in range(6)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert exponential_delay(0, 0.0, 30.0) == 0.0  # REST allows an initial delay of zero
    assert exponential_delay(10**9, 0.5, 60.0) == 60.0  # no overflow
    assert jittered(10.0, 0.0) == 5.0 and jittered(10.0, 0.5) == 7.5


def test_many_failures_never_overflow():
    backoff = Backoff(0.5, 60.0)
    for _ in range(5000):
        delay = backoff.next_delay()
    assert 30.0 <= delay <= 60.0


@pytest.mark.parametrize(
    ("initial", "cap"), [(0, 1), (-1, 1), (2, 1), (1, float("inf")), (float("nan"), 1)]
)
def test_settings_that_would_loop_tightly_or_forever_are_refused(initial, cap):
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(initial, cap)


def test_the_database_policy_retries_every_second_at_most():
    backoff = database_backoff()
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 1.0, 1.0, 1.0]


def test_an_outage_logs_its_first_failure_then_once_per_interval_and_its_end():
    outage = Outage()
    assert outage.ended(0.0) is None  # no outage, nothing to say
    # Retries every second for three minutes: lines at 0, 60 and 120 s.
    due = [t for t in range(180) if outage.failed(10.0 + t)]
    assert due == [0, 60, 120] and DB_DOWN_LOG_INTERVAL == 60.0
    assert outage.since == 10.0
    assert outage.ended(200.0) == 190.0
    assert outage.since is None and outage.failed(300.0)  # the next outage logs at once


def policy(initial: float = 1.0, cap: float = 60.0, draw: float = ALMOST_ONE) -> ReconnectPolicy:
    return ReconnectPolicy(initial, cap, rng=lambda: draw)


def test_fast_refusals_are_retried_within_a_second_however_many():
    reconnect = policy()
    delays = [reconnect.after_attempt_failed(refused=True, took=0.001) for _ in range(100)]
    assert REFUSED_RETRY_CAP == 1.0 and max(delays) <= REFUSED_RETRY_CAP
    low = policy(draw=0.0)
    assert {low.after_attempt_failed(refused=True, took=0.0) for _ in range(20)} == {0.5}


def test_slow_failures_back_off_to_the_cap():
    reconnect = policy()
    delays = [reconnect.after_attempt_failed(refused=False, took=10.0) for _ in range(8)]
    assert [round(d) for d in delays] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_a_refusal_that_took_long_is_a_slow_failure():
    reconnect = policy()
    took = FAST_REFUSAL_SECONDS + 0.5
    delays = [reconnect.after_attempt_failed(refused=True, took=took) for _ in range(6)]
    assert delays[-1] > 30


def test_drops_of_stable_links_never_grow_the_delay():
    # Kicks 3 s apart: each link was up ~2 s after a reconnect of under a second.
    reconnect = policy()
    delays = [reconnect.after_drop(lasted=STABLE_LINK_SECONDS + 1.0) for _ in range(20)]
    assert max(delays) <= 1.0


def test_a_link_dropped_at_once_backs_off():
    reconnect = policy()
    delays = [reconnect.after_drop(lasted=0.05) for _ in range(7)]
    assert [round(d) for d in delays] == [1, 2, 4, 8, 16, 32, 60]
    assert reconnect.after_drop(lasted=600.0) <= 1.0  # a stable link starts over


def test_an_outage_of_refusals_then_the_server_back():
    # Insight restarting: the link drops, the port refuses for a while, then it listens.
    reconnect = policy()
    assert reconnect.after_drop(lasted=3600.0) <= 1.0
    for _ in range(50):
        assert reconnect.after_attempt_failed(refused=True, took=0.0005) <= 1.0


def test_refusals_and_slow_failures_keep_separate_counts():
    reconnect = policy()
    for _ in range(30):
        reconnect.after_attempt_failed(refused=True, took=0.0)
    # The first timeout after many refusals waits the first step, not the cap...
    assert reconnect.after_attempt_failed(refused=False, took=10.0) <= 1.0
    for _ in range(10):
        reconnect.after_attempt_failed(refused=False, took=10.0)
    # ...and many timeouts do not stretch the retries of a port that now refuses.
    assert reconnect.after_attempt_failed(refused=True, took=0.0) <= 1.0


def test_the_refusal_cap_respects_the_configured_delays():
    # A reconnect_initial above the refusal cap is kept (never retried sooner than asked)...
    assert policy(initial=5.0).after_attempt_failed(refused=True, took=0.0) == pytest.approx(5.0)
    slow = policy(initial=5.0)
    assert max(slow.after_attempt_failed(refused=True, took=0.0) for _ in range(10)) < 5.0 + 1e-6
    # ...and a reconnect_max below it caps the refusals too.
    tight = policy(initial=0.1, cap=0.3)
    assert max(tight.after_attempt_failed(refused=True, took=0.0) for _ in range(10)) <= 0.3
