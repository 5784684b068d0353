"""How the callback sender shares its POST slots between origins (services/callbacks/
slots.py), as a pure state machine driven by a fake clock: slots are earned by fast
answers, slow origins keep the slow lane's two, busy origins share fairly, and the
reserve is for origins in good standing."""

from __future__ import annotations

import pytest

from dashpay.config.model import CallbacksConfig
from dashpay.services.callbacks.slots import (
    MAX_REMEMBERED_ORIGINS,
    SLOW_ANSWER_SECONDS,
    SLOW_LANE_SLOTS,
    SlotPolicy,
    reserve_slots,
    slow_after,
)

DEFAULTS = CallbacksConfig()
FAST = 0.008  # a healthy endpoint's answer time (the 8 ms)


def default_policy() -> SlotPolicy:
    return SlotPolicy(DEFAULTS.max_in_flight, slow_after(DEFAULTS.timeout))


def take_all(policy: SlotPolicy, origin: str, now: float) -> list:
    slots = []
    while policy.may_start(origin, now):
        slots.append(policy.start(origin, now))
    return slots


def earn(policy: SlotPolicy, origin: str, answers: int, now: float) -> float:
    """``answers`` fast answers, one at a time; the time after them."""
    for _ in range(answers):
        policy.finish(policy.start(origin, now), now + FAST)
        now += FAST
    return now


def test_the_defaults_are_16_slots_4_of_them_reserved_and_2_seconds_is_slow():
    policy = default_policy()
    assert (policy.slots, policy.reserve, policy.general) == (16, 4, 12)
    assert policy.slow_after == SLOW_ANSWER_SECONDS == 2.0
    assert policy.lane == SLOW_LANE_SLOTS == 2


@pytest.mark.parametrize(("slots", "reserve"), [(1, 0), (2, 1), (7, 1), (8, 2), (16, 4), (64, 16)])
def test_a_quarter_of_the_slots_is_reserved_at_least_one_when_there_are_two(slots, reserve):
    assert reserve_slots(slots) == reserve


def test_a_short_timeout_makes_half_of_it_slow():
    assert slow_after(10.0) == 2.0
    assert slow_after(3.0) == 1.5
    assert slow_after(1.0) == 0.5


def test_a_new_origin_holds_the_slow_lane_until_it_answers_fast():
    policy = default_policy()
    assert len(take_all(policy, "new", 0.0)) == SLOW_LANE_SLOTS
    assert policy.limit("new", 0.0) == SLOW_LANE_SLOTS


def test_fast_answers_earn_one_slot_each_up_to_the_general_slots():
    policy = default_policy()
    now = earn(policy, "shop", 5, 0.0)
    assert policy.limit("shop", now) == SLOW_LANE_SLOTS + 5
    now = earn(policy, "shop", 100, now)
    assert policy.limit("shop", now) == policy.general == 12
    assert len(take_all(policy, "shop", now)) == 12  # alone, it never takes the reserve
    assert policy.free == 4


def test_a_slow_answer_sends_an_earned_origin_back_to_the_slow_lane_until_a_fast_one():
    policy = default_policy()
    now = earn(policy, "shop", 20, 0.0)
    slot = policy.start("shop", now)
    now += SLOW_ANSWER_SECONDS
    assert policy.finish(slot, now)  # as slow as that, or a timeout: the lane, it says
    assert policy.is_slow("shop", now) and policy.limit("shop", now) == SLOW_LANE_SLOTS
    slot = policy.start("shop", now)
    now += DEFAULTS.timeout
    assert not policy.finish(slot, now)  # already in the lane: nothing new to say
    now = earn(policy, "shop", 1, now)
    assert not policy.is_slow("shop", now) and policy.limit("shop", now) == SLOW_LANE_SLOTS + 1


def test_a_post_in_flight_past_the_slow_time_makes_its_origin_slow_before_it_ends():
    policy = default_policy()
    now = earn(policy, "shop", 20, 0.0)
    policy.start("shop", now)
    assert policy.limit("shop", now + 1.9) == 12
    assert policy.is_slow("shop", now + 2.0)
    assert policy.limit("shop", now + 2.0) == SLOW_LANE_SLOTS


def test_an_endpoint_that_never_answers_holds_two_slots_however_long_it_is_retried():
    policy = default_policy()
    now = 0.0
    for _ in range(10):  # ten rounds of timeouts, each retried at once
        slots = take_all(policy, "hangs", now)
        assert len(slots) == SLOW_LANE_SLOTS
        now += DEFAULTS.timeout
        for slot in slots:
            policy.finish(slot, now)


def test_two_misbehaving_endpoints_never_keep_a_healthy_one_waiting():
    """The issue's numbers: 15 receivers on an endpoint that never answers (each POST
    held for the 10 s timeout) and 15 on one that answers after 8 s, every freed slot
    asked for again at once; a healthy origin asks every 100 ms and answers in 8 ms."""
    policy = default_policy()
    hold = {"hangs": DEFAULTS.timeout, "slow": 8.0}
    ends: list[tuple[float, object]] = []  # (when a POST ends, its slot)
    now = 0.0
    while now < 60.0:
        for end, slot in [e for e in ends if e[0] <= now]:
            policy.finish(slot, end)
            ends.remove((end, slot))
        for origin, seconds in hold.items():
            while policy.may_start(origin, now):
                ends.append((now + seconds, policy.start(origin, now)))
        assert policy.may_start("healthy", now), f"no slot for a healthy origin at {now:.1f}s"
        policy.finish(policy.start("healthy", now), now + FAST)
        assert policy.in_flight("hangs") + policy.in_flight("slow") <= 2 * SLOW_LANE_SLOTS
        now = round(now + 0.1, 3)


def test_busy_origins_share_the_general_slots_fairly():
    policy = default_policy()
    now = earn(policy, "a", 20, 0.0)
    now = earn(policy, "b", 20, now)
    first = take_all(policy, "a", now)
    assert len(first) == 12  # alone, "a" may take every general slot
    # "b" arrives: the fair share is 12 // 2 = 6, but the general slots are all held,
    # so "b" gets a reserve slot now and general ones as "a"'s answers come back.
    assert len(take_all(policy, "b", now)) == 1
    for slot in first[:8]:
        policy.finish(slot, now + FAST)
    now += FAST
    assert policy.limit("a", now) == policy.limit("b", now) == 6
    assert len(take_all(policy, "b", now)) == 5  # to its share of 6
    assert len(take_all(policy, "a", now)) == 2  # and "a" back up to its own
    assert policy.in_flight("a") == policy.in_flight("b") == 6


def test_the_reserve_is_for_origins_in_good_standing_one_slot_each():
    policy = default_policy()
    now = earn(policy, "turned-bad", 20, 0.0)
    assert len(take_all(policy, "turned-bad", now)) == 12  # then it stopped answering
    now += SLOW_ANSWER_SECONDS  # its POSTs are still in flight: it is slow now
    assert policy.is_slow("turned-bad", now) and not policy.may_start("turned-bad", now)
    for origin in ("good-1", "good-2", "good-3", "good-4"):
        assert len(take_all(policy, origin, now)) == 1  # one reserve slot each
    assert policy.free == 0 and not policy.may_start("good-5", now)


def test_a_slow_origin_may_not_take_a_reserve_slot():
    policy = default_policy()
    now = earn(policy, "filler", 20, 0.0)
    take_all(policy, "filler", now)  # the general slots are held
    slot = policy.start("slow", now)  # a reserve slot, while it was in good standing
    assert slot.reserve
    policy.finish(slot, now + 3.0)  # a slow answer
    now += 3.0
    assert policy.is_slow("slow", now) and not policy.may_start("slow", now)
    assert policy.may_start("fast", now)


def test_one_slot_goes_to_whoever_asks_and_is_given_back():
    policy = SlotPolicy(1, slow_after(DEFAULTS.timeout))
    assert (policy.general, policy.reserve, policy.lane) == (1, 0, 1)
    slot = policy.start("a", 0.0)
    assert not policy.may_start("a", 0.0) and not policy.may_start("b", 0.0)
    policy.finish(slot, 50.0)  # even after a timeout, the one slot is anyone's
    assert policy.may_start("a", 50.0) and policy.may_start("b", 50.0)


def test_taking_a_slot_that_is_not_free_is_refused():
    policy = default_policy()
    take_all(policy, "a", 0.0)
    with pytest.raises(ValueError):
        policy.start("a", 0.0)


def test_what_is_remembered_of_idle_origins_is_bounded():
    policy = default_policy()
    for index in range(MAX_REMEMBERED_ORIGINS + 10):
        earn(policy, f"origin-{index}", 1, float(index))
    assert len(policy._origins) <= MAX_REMEMBERED_ORIGINS + 1
    policy.finish(policy.start("slow", 0.0), 10.0)
    assert policy.is_slow("slow", 10.0)
    assert policy.taken == 0 and policy.free == 16
