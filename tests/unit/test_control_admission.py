"""The control connection table: per-uid shares, whom to evict, pressure."""

from __future__ import annotations

from dashpay.net.control_admission import MAX_EVICTION_PROBES, Admission, Seat

ROOT, ALICE, BOB = 0, 1000, 1001


def always(seat: Seat) -> bool:
    return True


class Table:
    """An Admission with a clock and a counter of connection numbers."""

    def __init__(self, limit: int) -> None:
        self.admission = Admission(limit)
        self.now = 0.0
        self.numbers = iter(range(1, 10**6))

    def connect(self, uid: int, evictable=always):
        self.now += 1.0
        seat = Seat(next(self.numbers), uid, self.now)
        return seat, self.admission.admit(seat, evictable)

    def fill(self, uid: int, n: int) -> list[Seat]:
        seats = []
        for _ in range(n):
            seat, verdict = self.connect(uid)
            assert verdict.admitted
            seats.append(seat)
        return seats


def test_one_uid_past_its_share_replaces_its_own_longest_idle():
    table = Table(8)
    mine = table.fill(ALICE, 4)  # the share: half of 8
    seat, verdict = table.connect(ALICE)
    assert verdict.admitted and verdict.evicted is mine[0]
    assert not mine[0].held and seat.held
    assert table.admission.held_by(ALICE) == 4


def test_a_full_table_evicts_the_longest_idle_of_the_heaviest_uid():
    table = Table(8)
    alice = table.fill(ALICE, 4)
    bob = table.fill(BOB, 3)
    root = table.fill(ROOT, 1)
    seat, verdict = table.connect(ROOT)  # full: Alice holds most
    assert verdict.evicted is alice[0]
    assert all(s.held for s in bob + root)


def test_answering_connections_are_never_evicted():
    table = Table(8)
    alice = table.fill(ALICE, 4)
    for seat in alice[:3]:
        table.admission.busy(seat)
    _, verdict = table.connect(ALICE)
    assert verdict.evicted is alice[3]  # the only idle one, though the newest
    assert all(seat.held for seat in alice[:3])


def test_a_share_that_is_all_busy_refuses_and_says_why():
    table = Table(8)
    for seat in table.fill(ALICE, 4):
        table.admission.busy(seat)
    _, verdict = table.connect(ALICE)
    assert not verdict.admitted
    assert "uid 1000" in verdict.reason and "share of 4" in verdict.reason
    seat, verdict = table.connect(BOB)  # another uid still gets in
    assert verdict.admitted and verdict.evicted is None


def test_a_full_table_of_busy_connections_refuses():
    table = Table(4)
    for uid in (ALICE, BOB, ROOT, 7):
        for seat in table.fill(uid, 1):
            table.admission.busy(seat)
    _, verdict = table.connect(8)
    assert not verdict.admitted and "maximum of 4" in verdict.reason


def test_going_idle_again_moves_a_connection_to_the_back_of_the_line():
    table = Table(8)
    alice = table.fill(ALICE, 4)
    table.admission.busy(alice[0])
    table.admission.idle(alice[0], table.now + 0.5)  # answered a request just now
    _, verdict = table.connect(ALICE)
    assert verdict.evicted is alice[1]


def test_connections_with_a_request_on_its_way_are_skipped_but_only_a_few_are_probed():
    table = Table(64)
    alice = table.fill(ALICE, 32)
    _, verdict = table.connect(ALICE, evictable=lambda seat: seat is not alice[0])
    assert verdict.evicted is alice[1]
    probed = []
    _, verdict = table.connect(ALICE, evictable=lambda seat: probed.append(seat) or False)
    assert not verdict.admitted and len(probed) == MAX_EVICTION_PROBES


def test_pressure_starts_at_half_and_ends_below_a_quarter():
    table = Table(8)
    seats = table.fill(ALICE, 3)
    assert not table.admission.under_pressure
    seats += table.fill(BOB, 1)
    assert table.admission.under_pressure
    for seat in seats[:2]:
        table.admission.release(seat)
    assert table.admission.under_pressure  # 2 of 8: not yet below a quarter
    table.admission.release(seats[2])
    assert not table.admission.under_pressure
    table.admission.release(seats[2])  # twice is harmless
    assert table.admission.active == 1
