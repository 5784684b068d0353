"""The one retry-spacing policy (dashpay/domain/backoff.py).

Proves: exact doubling to the cap without jitter (the database and rescan retries),
half-to-full jitter with it (the Insight socket and REST), reset after a success, no
overflow after many failures, and refusal of settings that would loop tightly.
"""

from __future__ import annotations

import pytest

from dashpay.domain.backoff import Backoff, database_backoff, exponential_delay, jittered


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


def test_the_database_policy_doubles_from_half_a_second_to_thirty():
    backoff = database_backoff()
    assert [backoff.next_delay() for _ in range(9)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0
    ]  # fmt: skip
