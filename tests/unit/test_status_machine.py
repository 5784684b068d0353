"""The receiver state machine (``domain/status.py``) against the rules that move it.

Every transition the table lists is made by some input of ``decide`` or ``cancel``
(one example each, and the examples cover the table exactly), nothing outside the table
is ever produced (random payment histories through ``merge_observation`` and
``decide``, checked independently of decide's own check), and decide refuses a change
the table does not list."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashpay.domain import accounting as acc
from dashpay.domain import status as st_
from dashpay.domain.errors import Conflict
from dashpay.domain.model import (
    Payment,
    PaymentChange,
    PaymentObservation,
    Receiver,
    apply_update,
)
from dashpay.domain.status import (
    CANCELLED,
    CHANGE_DROPPED,
    CHANGE_NEW,
    CHANGE_UNCHANGED,
    EXPIRED,
    PAID,
    PARTIAL,
    PENDING,
    SETTLED,
    STATUSES,
    TRANSITIONS,
    TransitionError,
)

T0 = 1_800_000_000_000
DUE = 100_000
HALF = DUE // 2
EXPIRES = T0 + 60_000
ADDRESS = "XxFKyXX1ibFAn4s4VLVZodgBeciLWhu8o9"
RULES = acc.Rules(confirmations=1)


def payload(name, ident, now, receiver, payment) -> str:
    return "{}"


def new_receiver(status: str = PENDING) -> Receiver:
    return Receiver(
        receiver_id=7,
        wallet_id="w",
        chain=0,
        hd_index=0,
        address=ADDRESS,
        amount_duffs=DUE,
        received_duffs=0,
        status=status,
        overpaid=False,
        late=False,
        created_at=T0,
        updated_at=T0,
        expires_at=EXPIRES,
        paid_at=None,
        settled_at=None,
        closed_at=None,
        fiat_amount=None,
        fiat_currency=None,
        rate=None,
        rate_provider=None,
        rate_fetched_at=None,
        callback_url=None,
        description=None,
        username=None,
        idempotency_key=None,
    )


class Sim:
    """One receiver and its payments, moved only by the domain's functions (the
    engine's unit of work, without a database). ``seen`` lists every status change."""

    def __init__(self) -> None:
        self.receiver = new_receiver()
        self.payments: dict[str, Payment] = {}
        self.now = T0
        self.seen: list[tuple[str, str]] = []

    def _decide(self, changes: list[PaymentChange]) -> None:
        payments = sorted(self.payments.values(), key=lambda p: (p.first_seen_at, p.payment_id))
        update, _ = acc.decide(
            self.receiver, payments, changes, now=self.now, rules=RULES, payload=payload
        )
        self._apply(update)

    def _apply(self, update) -> None:
        if update is not None:
            old = self.receiver.status
            self.receiver = apply_update(self.receiver, update)
            if self.receiver.status != old:
                self.seen.append((old, self.receiver.status))

    def at(self, now: int) -> Sim:
        self.now = max(self.now, now)
        return self

    def pay(self, amount: int, *, locked: bool = False) -> Sim:
        txid = f"{len(self.payments) + 1:064x}"
        self.now += 1
        payment = Payment(
            payment_id=len(self.payments) + 1,
            receiver_id=7,
            txid=txid,
            address=ADDRESS,
            amount_duffs=amount,
            instant_locked=locked,
            block_height=None,
            confirmations=0,
            dropped=False,
            first_seen_at=self.now,
            updated_at=self.now,
        )
        self.payments[txid] = payment
        self._decide([PaymentChange(payment, CHANGE_NEW)])
        return self

    def observe(self, n: int, *, locked: bool = False, confirmations: int | None = None) -> Sim:
        """Observe payment ``n`` (1-based) again: a lock, a confirmation, a restore."""
        stored = list(self.payments.values())[n - 1]
        seen = PaymentObservation(
            stored.txid, ADDRESS, stored.amount_duffs, locked, None, confirmations
        )
        self.now += 1
        merged, kind = acc.merge_observation(stored, seen, self.now)
        self.payments[stored.txid] = merged
        self._decide([PaymentChange(merged, kind)])
        return self

    def drop(self, n: int) -> Sim:
        stored = list(self.payments.values())[n - 1]
        changes = []
        if not stored.dropped:
            self.now += 1
            stored = self.payments[stored.txid] = replace(stored, dropped=True, updated_at=self.now)
            changes.append(PaymentChange(stored, CHANGE_DROPPED))
        self._decide(changes)
        return self

    def tick(self, now: int) -> Sim:
        self.at(now)._decide([])
        return self

    def cancel(self) -> Sim:
        self.now += 1
        with contextlib.suppress(Conflict):  # not cancellable: nothing changes
            self._apply(acc.cancel(self.receiver, self.now))
        return self


# One way to make each transition, from a fresh pending receiver.
EXAMPLES = {
    (PENDING, PARTIAL): lambda: Sim().pay(HALF),
    (PENDING, PAID): lambda: Sim().pay(DUE),
    (PENDING, SETTLED): lambda: Sim().pay(DUE, locked=True),
    (PENDING, EXPIRED): lambda: Sim().tick(EXPIRES),
    (PENDING, CANCELLED): lambda: Sim().cancel(),
    (PARTIAL, PENDING): lambda: Sim().pay(HALF).drop(1),
    (PARTIAL, PAID): lambda: Sim().pay(HALF).pay(HALF),
    (PARTIAL, SETTLED): lambda: Sim().pay(HALF, locked=True).pay(HALF, locked=True),
    (PARTIAL, EXPIRED): lambda: Sim().pay(HALF).tick(EXPIRES),
    (PARTIAL, CANCELLED): lambda: Sim().pay(HALF).cancel(),
    (PAID, PENDING): lambda: Sim().pay(DUE).drop(1),
    (PAID, PARTIAL): lambda: Sim().pay(HALF).pay(HALF).drop(1),
    (PAID, SETTLED): lambda: Sim().pay(DUE).observe(1, confirmations=1),
    (SETTLED, PENDING): lambda: Sim().pay(DUE, locked=True).drop(1),
    (SETTLED, PARTIAL): lambda: Sim().pay(HALF, locked=True).pay(HALF, locked=True).drop(1),
    (SETTLED, PAID): lambda: Sim().pay(DUE, locked=True).pay(DUE).drop(1),
    (EXPIRED, PAID): lambda: Sim().tick(EXPIRES).pay(DUE),
    (EXPIRED, SETTLED): lambda: Sim().tick(EXPIRES).pay(DUE, locked=True),
}


def test_the_examples_cover_the_table_exactly() -> None:
    listed = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert set(EXAMPLES) == listed
    assert set(TRANSITIONS) == set(STATUSES)


@pytest.mark.parametrize("transition", list(EXAMPLES), ids="->".join)
def test_every_transition_of_the_table_is_made_by_some_input(transition) -> None:
    sim = EXAMPLES[transition]()
    assert sim.seen[-1] == transition


def test_final_and_cancellable_statuses_follow_from_the_table() -> None:
    assert {SETTLED, EXPIRED, CANCELLED} == st_.FINAL_STATUSES
    assert {PENDING, PARTIAL} == st_.CANCELLABLE_STATUSES


operation = st.one_of(
    st.tuples(st.just("pay"), st.integers(1, DUE + HALF), st.booleans()),
    st.tuples(st.just("observe"), st.integers(1, 6), st.booleans(), st.none() | st.integers(0, 3)),
    st.tuples(st.just("drop"), st.integers(1, 6)),
    st.tuples(st.just("tick"), st.integers(0, 120_000)),
    st.tuples(st.just("cancel")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=12))
def test_no_payment_history_leaves_the_table(operations) -> None:
    sim = Sim()
    for op in operations:
        kind, *args = op
        if kind == "pay":
            sim.pay(args[0], locked=args[1])
        elif kind in ("observe", "drop") and args[0] > len(sim.payments):
            continue
        elif kind == "observe":
            sim.observe(args[0], locked=args[1], confirmations=args[2])
        elif kind == "drop":
            sim.drop(args[0])
        elif kind == "tick":
            sim.tick(T0 + args[0])
        else:
            sim.cancel()
    for old, new in sim.seen:
        assert new in TRANSITIONS[old], f"{old} -> {new} is not in TRANSITIONS"


def test_decide_refuses_a_change_the_table_does_not_list(monkeypatch) -> None:
    monkeypatch.setitem(TRANSITIONS, PENDING, TRANSITIONS[PENDING] - {PAID})
    with pytest.raises(TransitionError, match="'pending' -> 'paid' is not allowed"):
        Sim().pay(DUE)


def test_cancel_refuses_what_is_not_cancellable_and_keeps_a_cancelled_one() -> None:
    for status in (PAID, SETTLED, EXPIRED):
        with pytest.raises(Conflict, match=f"is {status}") as caught:
            acc.cancel(new_receiver(status), T0)
        assert caught.value.details["status"] == status
    assert acc.cancel(new_receiver(CANCELLED), T0) is None
    update = acc.cancel(replace(new_receiver(PARTIAL), received_duffs=HALF), T0 + 5)
    assert (update.status, update.closed_at, update.updated_at) == (CANCELLED, T0 + 5, T0 + 5)
    assert update.received_duffs == HALF


def test_merge_observation_moves_forward_only() -> None:
    sim = Sim().pay(HALF, locked=True)
    stored = sim.payments[f"{1:064x}"]
    stale = PaymentObservation(stored.txid, ADDRESS, HALF, False, None, None)
    assert acc.merge_observation(stored, stale, T0 + 9) == (stored, CHANGE_UNCHANGED)
