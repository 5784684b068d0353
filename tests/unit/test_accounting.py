"""The accounting rules, one function at a time (the engine and the databases are
proven end to end in tests/integration and tests/contract)."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from dashpay.domain import accounting as acc
from dashpay.domain.model import Payment, PaymentChange, Receiver
from dashpay.domain.payload import event_payload

NOW = 1_800_000_000_000
DUE = 100_000_000
RULES = acc.Rules()


def receiver(**kw) -> Receiver:
    base = dict(
        receiver_id=7,
        wallet_id="w",
        chain=0,
        hd_index=3,
        address="XxFKyXX1ibFAn4s4VLVZodgBeciLWhu8o9",
        amount_duffs=DUE,
        received_duffs=0,
        status="pending",
        overpaid=False,
        late=False,
        created_at=NOW - 60_000,
        updated_at=NOW - 60_000,
        expires_at=NOW + 3_600_000,
        paid_at=None,
        settled_at=None,
        closed_at=None,
        fiat_amount=None,
        fiat_currency=None,
        rate=None,
        rate_provider=None,
        rate_fetched_at=None,
        callback_url=None,
        description="order 42",
        username="alice",
        idempotency_key=None,
    )
    base.update(kw)
    return Receiver(**base)


def payment(txid: str, amount: int, *, locked=False, conf=0, dropped=False, seen=NOW) -> Payment:
    return Payment(
        payment_id=hash(txid) & 0xFFFF,
        receiver_id=7,
        txid=txid * 64 if len(txid) == 1 else txid,
        address="XxFKyXX1ibFAn4s4VLVZodgBeciLWhu8o9",
        amount_duffs=amount,
        instant_locked=locked,
        block_height=None if conf == 0 else 100,
        confirmations=conf,
        dropped=dropped,
        first_seen_at=seen,
        updated_at=seen,
    )


def run(
    r: Receiver, payments: list[Payment], changes: list[tuple[Payment, str]], now=NOW, rules=RULES
):
    counter = iter(range(1000))
    update, events = acc.decide(
        r,
        payments,
        [PaymentChange(p, kind) for p, kind in changes],
        now=now,
        rules=rules,
        payload=event_payload,
        event_id=lambda: f"evt_{next(counter)}",
    )
    return update, [e.event for e in events], events


def test_partial_then_full_payment_gives_partial_then_paid_then_settled():
    r = receiver()
    p1 = payment("a", 40_000_000)
    update, names, _ = run(r, [p1], [(p1, "new")])
    assert (update.status, update.received_duffs, names) == (
        "partial",
        40_000_000,
        ["receiver.partial"],
    )
    r = acc.apply_update(r, update)

    p2 = payment("b", 60_000_000)
    update, names, _ = run(r, [p1, p2], [(p2, "new")])
    assert (update.status, update.received_duffs, names) == ("paid", DUE, ["receiver.paid"])
    assert update.paid_at == NOW and update.settled_at is None
    r = acc.apply_update(r, update)

    locked1, locked2 = replace(p1, instant_locked=True), replace(p2, instant_locked=True)
    update, names, _ = run(r, [locked1, p2], [(locked1, "updated")])
    assert update is None or update.status == "paid"
    assert names == []
    update, names, _ = run(r, [locked1, locked2], [(locked2, "updated")])
    assert (update.status, names) == ("settled", ["receiver.settled"])
    assert update.closed_at == NOW and update.settled_at == NOW


def test_an_already_locked_full_payment_is_paid_and_settled_at_once():
    p = payment("a", DUE, locked=True)
    update, names, _ = run(receiver(), [p], [(p, "new")])
    assert update.status == "settled"
    assert names == ["receiver.paid", "receiver.settled"]


def test_unchanged_observation_changes_nothing_and_enqueues_nothing():
    p = payment("a", 40_000_000)
    r = receiver(status="partial", received_duffs=40_000_000)
    assert run(r, [p], [(p, "unchanged")])[:2] == (None, [])


def test_confirmations_settle_when_the_rule_is_met():
    p = payment("a", DUE, conf=2)
    r = receiver(status="paid", received_duffs=DUE, paid_at=NOW - 1)
    update, names, _ = run(r, [p], [(p, "updated")], rules=acc.Rules(confirmations=3))
    assert update is None and names == []
    p3 = replace(p, confirmations=3)
    update, names, _ = run(r, [p3], [(p3, "updated")], rules=acc.Rules(confirmations=3))
    assert (update.status, names) == ("settled", ["receiver.settled"])


def test_underpayment_within_tolerance_counts_as_paid():
    rules = acc.Rules(tolerance_percent=Decimal("1.5"))
    p = payment("a", DUE - 1_500_000)
    update, names, _ = run(receiver(), [p], [(p, "new")], rules=rules)
    assert (update.status, names) == ("paid", ["receiver.paid"])
    short = payment("b", DUE - 1_500_001)
    update, names, _ = run(receiver(), [short], [(short, "new")], rules=rules)
    assert (update.status, names) == ("partial", ["receiver.partial"])


@given(
    st.integers(min_value=1, max_value=21 * 10**14),
    st.decimals(min_value=0, max_value=100, places=3),
)
def test_threshold_never_accepts_more_shortfall_than_configured(amount, tolerance):
    threshold = acc.paid_threshold(amount, tolerance)
    assert 0 <= threshold <= amount
    # The accepted shortfall is at most the configured percentage, exactly.
    assert Decimal(amount - threshold) <= Decimal(amount) * tolerance / 100
    assert Decimal(amount - threshold + 1) > Decimal(amount) * tolerance / 100


def test_overpayment_is_flagged():
    p = payment("a", DUE + 5)
    update, names, _ = run(receiver(), [p], [(p, "new")])
    assert update.overpaid and update.status == "paid" and names == ["receiver.paid"]


def test_second_payment_after_settlement_is_recorded_and_reported_as_overpaid():
    first = payment("a", DUE, locked=True)
    r = receiver(status="settled", received_duffs=DUE, paid_at=NOW, settled_at=NOW, closed_at=NOW)
    again = payment("b", 10_000)
    update, names, _ = run(r, [first, again], [(again, "new")])
    assert update.status == "settled"  # forward only: still settled
    assert update.received_duffs == DUE + 10_000 and update.overpaid
    assert names == ["receiver.overpaid"]
    assert update.closed_at == NOW  # the monitoring window is not restarted


def test_expiry_without_payment():
    r = receiver(expires_at=NOW - 1)
    update, names, _ = run(r, [], [])
    assert (update.status, names) == ("expired", ["receiver.expired"])
    assert update.closed_at == NOW


def test_partial_then_expiry_keeps_the_money_and_expires():
    p = payment("a", 10)
    r = receiver(status="partial", received_duffs=10, expires_at=NOW - 1)
    update, names, _ = run(r, [p], [])
    assert (update.status, update.received_duffs, names) == ("expired", 10, ["receiver.expired"])


def test_late_full_payment_after_expiry_makes_it_paid_and_late():
    r = receiver(status="expired", expires_at=NOW - 10_000, closed_at=NOW - 5_000)
    p = payment("a", DUE, seen=NOW)
    update, names, _ = run(r, [p], [(p, "new")])
    assert (update.status, update.late, names) == ("paid", True, ["receiver.paid"])
    assert update.closed_at is None  # no longer final: it will settle


def test_late_partial_payment_after_expiry_is_recorded_and_reported():
    r = receiver(status="expired", expires_at=NOW - 10_000, closed_at=NOW - 5_000)
    p = payment("a", 5)
    update, names, _ = run(r, [p], [(p, "new")])
    assert (update.status, update.received_duffs, update.late) == ("expired", 5, True)
    assert names == ["receiver.late_payment"]


def test_payment_arriving_after_expires_at_before_the_tick_is_late_but_paid():
    r = receiver(expires_at=NOW - 1)
    p = payment("a", DUE, seen=NOW)
    update, names, _ = run(r, [p], [(p, "new")])
    assert (update.status, update.late, names) == ("paid", True, ["receiver.paid"])


def test_cancelled_receiver_paid_anyway_stays_cancelled_and_reports_the_money():
    r = receiver(status="cancelled", closed_at=NOW - 1000)
    p = payment("a", DUE)
    update, names, events = run(r, [p], [(p, "new")])
    assert (update.status, update.received_duffs, update.late) == ("cancelled", DUE, True)
    assert names == ["receiver.late_payment"]
    body = json.loads(events[0].payload)
    assert body["receiver"]["status"] == "cancelled" and body["payment"]["amount_duffs"] == DUE


def test_dropped_payment_lowers_received_and_status_and_is_reported():
    p1 = payment("a", 40_000_000)
    p2 = payment("b", 60_000_000, dropped=True)
    r = receiver(status="paid", received_duffs=DUE, paid_at=NOW - 1)
    update, names, _ = run(r, [p1, p2], [(p2, "dropped")])
    assert (update.status, update.received_duffs) == ("partial", 40_000_000)
    assert update.paid_at is None
    assert names == ["receiver.payment_dropped"]


def test_restored_payment_counts_again():
    p = payment("a", DUE)
    r = receiver(status="pending", received_duffs=0)
    update, names, _ = run(r, [p], [(p, "restored")])
    assert (update.status, names) == ("paid", ["receiver.paid"])


def test_payload_carries_structured_and_flat_fields():
    p = payment("a", DUE, locked=True)
    _, _, events = run(receiver(), [p], [(p, "new")])
    body = json.loads(events[0].payload)
    assert body["event"] == "receiver.paid" and body["event_id"] == events[0].event_id
    assert body["receiver"]["status"] == "settled"
    assert body["receiver"]["received_duffs"] == DUE
    assert body["payment"]["txid"] == "a" * 64
    flat = {
        "receiver_id": 7,
        "username": "alice",
        "dash_payment_address": "XxFKyXX1ibFAn4s4VLVZodgBeciLWhu8o9",
        "amount_duffs": DUE,
        "description": "order 42",
        "payment_received_amount_duffs": DUE,
        "txid": "a" * 64,
        "txlock": True,
    }
    assert {k: body[k] for k in flat} == flat
    for key in ("amount_fiat", "type_fiat", "base_fiat", "created_date", "payment_date"):
        assert key in body


@given(st.lists(st.integers(min_value=1, max_value=DUE), min_size=1, max_size=6))
def test_received_is_always_the_sum_of_counted_payments(amounts):
    r = receiver()
    payments: list[Payment] = []
    for i, amount in enumerate(amounts):
        p = payment(f"{i:064x}", amount)
        payments.append(p)
        update, _, _ = run(r, list(payments), [(p, "new")])
        if update is not None:
            r = acc.apply_update(r, update)
        assert r.received_duffs == sum(x.amount_duffs for x in payments)
        expected = "paid" if r.received_duffs >= DUE else "partial"
        assert r.status == expected


def test_several_payments_in_one_step_each_get_their_own_event():
    p1, p2, p3 = payment("a", 30_000_000), payment("b", 80_000_000), payment("c", 5)
    update, names, events = run(receiver(), [p1, p2, p3], [(p1, "new"), (p2, "new"), (p3, "new")])
    assert update.status == "paid" and update.received_duffs == 110_000_005
    assert names == ["receiver.partial", "receiver.paid", "receiver.overpaid"]
    assert [json.loads(e.payload)["txid"] for e in events] == [p1.txid, p2.txid, p3.txid]


def test_apply_update_sets_exactly_the_update_fields():
    from dataclasses import asdict

    from dashpay.domain.model import ReceiverUpdate

    r = receiver(description="kept", callback_url="https://shop.example/cb", late=False)
    update = ReceiverUpdate(
        received_duffs=DUE + 1,
        status="settled",
        overpaid=True,
        late=True,
        paid_at=NOW - 5,
        settled_at=NOW - 1,
        closed_at=NOW,
        updated_at=NOW,
    )
    assert acc.apply_update(r, update) == replace(r, **asdict(update))


# -- absence: a payment the chain source stops showing ---------------------------------

DROP_AFTER = 600_000


def test_a_first_absence_flags_an_unlocked_payment_and_keeps_it_counted() -> None:
    p = payment("a", DUE)
    flagged, kind = acc.absence(p, NOW, DROP_AFTER)
    assert kind == "missing"
    assert flagged.missing_since == NOW and flagged.dropped is False and flagged.updated_at == NOW


def test_an_unlocked_payment_is_dropped_only_once_absent_for_drop_after() -> None:
    flagged, _ = acc.absence(payment("a", DUE), NOW, DROP_AFTER)
    early, kind = acc.absence(flagged, NOW + DROP_AFTER - 1, DROP_AFTER)
    assert kind == "unchanged" and early == flagged
    dropped, kind = acc.absence(flagged, NOW + DROP_AFTER, DROP_AFTER)
    assert kind == "dropped" and dropped.dropped is True
    assert dropped.missing_since == NOW  # when it went missing stays on record


def test_positive_evidence_drops_an_unlocked_payment_at_once() -> None:
    dropped, kind = acc.absence(payment("a", DUE), NOW, DROP_AFTER, evidence=True)
    assert kind == "dropped" and dropped.dropped is True


@given(
    locked=st.booleans(),
    conf=st.integers(0, 10),
    later=st.integers(0, 10 * DROP_AFTER),
    evidence=st.booleans(),
)
def test_a_locked_or_mined_payment_is_never_dropped_for_absence(locked, conf, later, evidence):
    p = payment("a", DUE, locked=locked, conf=conf)
    if not acc.payment_final(p):
        return
    flagged, kind = acc.absence(p, NOW, DROP_AFTER, evidence=evidence)
    assert kind == "missing" and not flagged.dropped
    again, kind = acc.absence(flagged, NOW + later, DROP_AFTER, evidence=evidence)
    assert kind == "unchanged" and not again.dropped


def test_seeing_a_flagged_payment_again_clears_the_flag() -> None:
    from dashpay.domain.model import PaymentObservation

    flagged, _ = acc.absence(payment("a", DUE), NOW, DROP_AFTER)
    seen = PaymentObservation(flagged.txid, flagged.address, DUE, False, None, None)
    merged, kind = acc.merge_observation(flagged, seen, NOW + 1)
    assert kind == "updated" and merged.missing_since is None and merged.updated_at == NOW + 1


def test_an_already_dropped_payment_is_left_alone() -> None:
    p = payment("a", DUE, dropped=True)
    assert acc.absence(p, NOW, DROP_AFTER) == (p, "unchanged")


def test_too_much_missing_at_once_is_a_suspected_source_reset() -> None:
    suspected = acc.source_reset_suspected
    assert suspected(11, 1000) and not suspected(10, 1000)  # more than 10
    assert suspected(3, 4) and not suspected(2, 4)  # more than half, of at least 4
    assert not suspected(1, 1) and not suspected(3, 3)  # too few checked to tell
