"""The pending table's indexes against the plain scans they replace.

``due_to_expire``, ``past_window`` and ``awaiting_settlement`` answer from side indexes
(deadline calendars, a set of receivers with unsettled payments) so the engine's tick
does not walk a million entries. Whatever happens to the entries, they must answer
exactly what a scan of every entry answers.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dashpay.domain.model import Payment, PendingRow
from dashpay.domain.status import FINAL_STATUSES, PAID, PARTIAL, PENDING, SETTLED, STATUSES
from dashpay.engine.pending import DEADLINE_BUCKET_MS, Deadlines, PendingTable
from tests.unit.test_accounting import receiver as accounting_receiver


def receiver(receiver_id: int, status: str, expires_at: int | None, closed_at: int | None):
    return accounting_receiver(
        receiver_id=receiver_id,
        hd_index=receiver_id,
        address=address(receiver_id),
        status=status,
        expires_at=expires_at,
        closed_at=closed_at,
    )


def address(receiver_id: int) -> str:
    return f"yAddress{receiver_id:026d}"


def payment(receiver_id: int, n: int, locked: bool, confirmations: int, dropped: bool) -> Payment:
    return Payment(
        payment_id=n,
        receiver_id=receiver_id,
        txid=f"{n:064x}",
        address=address(receiver_id),
        amount_duffs=1_000,
        instant_locked=locked,
        block_height=None if confirmations == 0 else 100,
        confirmations=confirmations,
        dropped=dropped,
        first_seen_at=0,
        updated_at=0,
    )


# -- the scans the indexes replace -------------------------------------------------------


def scan_due_to_expire(table: PendingTable, now: int) -> list[int]:
    return sorted(
        e.receiver_id
        for e in table.entries()
        if e.status in (PENDING, PARTIAL) and e.expires_at is not None and e.expires_at <= now
    )


def scan_past_window(table: PendingTable, now: int, window: int) -> list[int]:
    return sorted(
        e.receiver_id
        for e in table.entries()
        if e.status in FINAL_STATUSES and e.closed_at is not None and e.closed_at + window < now
    )


def scan_awaiting_settlement(table: PendingTable, confirmations: int):
    out = []
    for e in table.entries():
        if e.status in (PARTIAL, PAID) or e.status in FINAL_STATUSES:
            txids = e.unsettled_txids(confirmations)
            if txids:
                out.append((e.receiver_id, e.address, txids))
    return sorted(out)


# -- operations --------------------------------------------------------------------------

# Times over a few buckets, so that ids share buckets, cross them and sit on the edges.
times = st.integers(0, 4 * DEADLINE_BUCKET_MS)
maybe_time = st.none() | times | st.sampled_from([DEADLINE_BUCKET_MS - 1, DEADLINE_BUCKET_MS])
ids = st.integers(1, 5)
state = st.tuples(ids, st.sampled_from(STATUSES), maybe_time, maybe_time)
payments = st.lists(
    st.tuples(st.booleans(), st.integers(0, 3), st.booleans()), min_size=0, max_size=3
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("load"), st.lists(state, max_size=4)),
        st.tuples(st.just("add"), state),
        st.tuples(st.just("refresh"), state, payments),
        st.tuples(st.just("remove"), ids),
        st.tuples(
            st.just("tick"),
            times,
            st.sampled_from([0, 1, DEADLINE_BUCKET_MS, 2 * DEADLINE_BUCKET_MS + 7]),
            st.integers(0, 3),
            st.booleans(),
        ),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(operations)
def test_indexes_answer_what_a_scan_of_every_entry_answers(ops) -> None:
    table = PendingTable()
    serial = 0
    for op in ops:
        kind = op[0]
        if kind == "load":
            table.load(PendingRow(i, address(i), s, e, c) for i, s, e, c in op[1])
        elif kind == "add":
            table.add(receiver(*op[1]))
        elif kind == "refresh":
            (receiver_id, status, expires_at, closed_at), flags = op[1], op[2]
            rows = []
            for locked, confirmations, dropped in flags:
                serial += 1
                rows.append(payment(receiver_id, serial, locked, confirmations, dropped))
            table.refresh(receiver(receiver_id, status, expires_at, closed_at), rows)
        elif kind == "remove":
            table.remove(op[1])
        else:
            _, now, window, confirmations, leave = op
            assert sorted(table.due_to_expire(now)) == scan_due_to_expire(table, now)
            expected = scan_past_window(table, now, window)
            assert sorted(table.past_window(now, window)) == expected
            if leave:  # as the engine does
                for receiver_id in expected:
                    table.remove(receiver_id)
            assert sorted(table.awaiting_settlement(confirmations)) == scan_awaiting_settlement(
                table, confirmations
            )


def test_a_receiver_stays_due_until_its_status_moves_on() -> None:
    """If recording the expiry fails, the next tick asks again (as the scan did)."""
    table = PendingTable()
    table.add(receiver(1, PENDING, 5_000, None))
    assert table.due_to_expire(4_999) == []
    assert table.due_to_expire(5_000) == [1]
    assert table.due_to_expire(6_000) == [1]
    table.refresh(receiver(1, "expired", 5_000, 6_000), [])
    assert table.due_to_expire(7_000) == []


def test_a_tick_only_opens_the_buckets_that_have_begun() -> None:
    deadlines = Deadlines()
    for receiver_id in range(1_000):
        deadlines.file(10 * DEADLINE_BUCKET_MS + receiver_id, receiver_id)
    deadlines.file(5, 5_000)
    deadlines.file(7, 5_000)
    assert deadlines.take(DEADLINE_BUCKET_MS - 1) == [5_000]
    assert len(deadlines) == 1_000
    assert deadlines.take(11 * DEADLINE_BUCKET_MS - 1) == list(range(1_000))
    assert len(deadlines) == 0


def test_loaded_entries_share_one_status_string() -> None:
    table = PendingTable()
    fresh = "".join(["pend", "ing"])  # a new str object, as a database driver returns
    assert fresh is not PENDING
    table.load([PendingRow(1, address(1), fresh, None, None)])
    table.add(receiver(2, "".join(["sett", "led"]), None, 1))
    assert table.get(address(1)).status is PENDING
    assert table.by_id(2).status is SETTLED


def test_an_unknown_status_is_kept_and_never_due() -> None:
    table = PendingTable()
    table.load([PendingRow(1, address(1), "archived", 0, 0)])
    assert table.by_id(1).status == "archived"
    assert table.due_to_expire(10**15) == []
    assert table.past_window(10**15, 0) == []


def test_a_receiver_whose_time_moves_is_found_at_the_new_time() -> None:
    """A tick between the two drops the old filing; the new time must still be filed."""
    table = PendingTable()
    table.add(receiver(1, PENDING, 0, None))
    table.add(receiver(2, SETTLED, None, 0))
    later = 3 * DEADLINE_BUCKET_MS + 5
    table.refresh(receiver(1, PARTIAL, later, None), [])
    table.refresh(receiver(2, "cancelled", None, later), [])
    assert table.due_to_expire(DEADLINE_BUCKET_MS) == []
    assert table.past_window(DEADLINE_BUCKET_MS, 0) == []
    assert table.due_to_expire(later) == [1]
    assert table.past_window(later + 1, 0) == [2]


# -- the re-check index: unlocked mempool payments and payments flagged missing ---------


def test_to_recheck_lists_receivers_with_unlocked_mempool_or_missing_payments() -> None:
    from dataclasses import replace

    table = PendingTable()
    for rid in (1, 2, 3, 4):
        table.add(receiver(rid, PAID, None, None))
    table.refresh(receiver(1, PAID, None, None), [payment(1, 1, False, 0, False)])  # mempool
    table.refresh(receiver(2, SETTLED, None, 5), [payment(2, 2, True, 0, False)])  # locked
    locked_missing = replace(payment(3, 3, True, 0, False), missing_since=7)
    table.refresh(receiver(3, SETTLED, None, 5), [locked_missing])
    table.refresh(receiver(4, PENDING, None, None), [payment(4, 4, False, 0, True)])  # dropped
    assert table.to_recheck() == [(1, address(1)), (3, address(3))]
    assert table.missing_payments() == 1
    # seen again and locked: nothing left to re-check for 1 and 3
    table.refresh(receiver(1, SETTLED, None, 5), [payment(1, 1, True, 0, False)])
    table.refresh(receiver(3, SETTLED, None, 5), [payment(3, 3, True, 0, False)])
    assert table.to_recheck() == [] and table.missing_payments() == 0
    assert table.by_id(2).holds(f"{2:064x}") and not table.by_id(4).holds(f"{4:064x}")
