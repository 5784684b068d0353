"""The repository contract, proven on SQLite and MariaDB with the same tests.

Concurrency is real: threads (as ``trio.to_thread`` would use) and separate repository
instances on one database (as separate processes would)."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial

import pytest

from dashpay.domain.errors import Conflict, InvalidParams, NotFound, Unavailable
from dashpay.domain.model import NewReceiver, Payment, PendingRow, Receiver
from dashpay.domain.status import CANCELLED, EXPIRED, PAID, PARTIAL, PENDING, SETTLED, STATUSES
from dashpay.domain.tokens import is_public_token, new_public_token
from dashpay.engine.record import cancel_receiver
from dashpay.repository.base import MAX_CREATE_BATCH, Repository
from dashpay.repository.schema import load_migrations
from tests.contract.conftest import MysqlTarget, Store, fake_address

WALLET = "a1b2c3d4e5f60718"
OTHER_WALLET = "ffeeddccbbaa9988"
CHAIN = 0
T0 = 1_700_000_000_000  # a fixed "now" in epoch ms
derive = fake_address(WALLET, CHAIN)
LATEST = load_migrations("sqlite")[-1].version


def cancel(repo: Repository, receiver_id: int, now: int) -> Receiver:
    """The cancel unit of work, in one transaction of ``repo`` (as the service runs it)."""
    return repo.transaction(partial(cancel_receiver, receiver_id=receiver_id, now=now))


def new(amount: int = 100_000, *, wallet: str = WALLET, **fields: object) -> NewReceiver:
    return NewReceiver(wallet_id=wallet, chain=CHAIN, amount_duffs=amount, created_at=T0, **fields)


def create(repo: Repository, amount: int = 100_000, **fields: object) -> Receiver:
    receiver, created = repo.create_receiver(new(amount, **fields), derive)
    assert created
    return receiver


def in_threads(count: int, work) -> list:
    """Run ``work(i)`` in ``count`` threads released at the same instant."""
    start = threading.Barrier(count)

    def run(i: int):
        start.wait(timeout=10)
        return work(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def force_status(store: Store, receiver_id: int, status: str, closed_at: int | None) -> None:
    store.execute(
        "UPDATE receivers SET status = ?, closed_at = ? WHERE receiver_id = ?",
        (status, closed_at, receiver_id),
    )


# -- migrations ------------------------------------------------------------------------


def test_empty_database_has_schema_version_zero(store: Store) -> None:
    assert store.open().schema_version() == 0


def test_migrate_applies_every_version_once_and_twice_is_a_no_op(store: Store) -> None:
    first = store.open()
    assert first.migrate() == list(range(1, LATEST + 1))
    assert first.schema_version() == LATEST
    assert first.migrate() == []
    assert store.open().migrate() == []
    assert store.execute("SELECT COUNT(*) FROM schema_migrations") == [(LATEST,)]


def test_concurrent_migrators_apply_each_migration_exactly_once(store: Store) -> None:
    repos = [store.open() for _ in range(3)]
    results = in_threads(3, lambda i: repos[i].migrate())
    assert sorted(v for applied in results for v in applied) == list(range(1, LATEST + 1))
    assert store.execute("SELECT COUNT(*) FROM schema_migrations") == [(LATEST,)]


def test_database_with_a_newer_schema_is_refused(store: Store) -> None:
    store.open().migrate()
    store.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        (LATEST + 7, "from_the_future", T0),
    )
    with pytest.raises(Unavailable) as caught:
        store.open().migrate()
    assert str(caught.value) == (
        f"database schema version {LATEST + 7} is newer than this dashpay ({LATEST}); "
        "upgrade dashpay"
    )


# -- creating and reading receivers ----------------------------------------------------


def test_every_receiver_field_round_trips_including_unicode(repo: Repository) -> None:
    full = new(
        123_456_789_012,
        expires_at=T0 + 900_000,
        fiat_amount="25.00",
        fiat_currency="EUR",
        rate="31.4159265358979",
        rate_provider="coingecko",
        rate_fetched_at=T0 - 5_000,
        callback_url="https://shop.example/hook?order=42&sig=" + "x" * 1900,
        description="Café ☕ order 🧾🎉 — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢" + "é" * 200,
        username="zoë 👩‍💻",
        idempotency_key="order-42/attempt-1",
        redirect_url="https://shop.example/thanks?order=42",
        public_token="AbC-_9" * 3 + "zZ0x",
    )
    created, was_created = repo.create_receiver(full, derive)
    assert was_created
    assert created == Receiver(
        receiver_id=created.receiver_id,
        wallet_id=WALLET,
        chain=CHAIN,
        hd_index=0,
        address=derive(0),
        amount_duffs=123_456_789_012,
        received_duffs=0,
        status=PENDING,
        overpaid=False,
        late=False,
        created_at=T0,
        updated_at=T0,
        expires_at=T0 + 900_000,
        paid_at=None,
        settled_at=None,
        closed_at=None,
        fiat_amount="25.00",
        fiat_currency="EUR",
        rate="31.4159265358979",
        rate_provider="coingecko",
        rate_fetched_at=T0 - 5_000,
        callback_url=full.callback_url,
        description=full.description,
        username=full.username,
        idempotency_key="order-42/attempt-1",
        public_token="AbC-_9AbC-_9AbC-_9zZ0x",
        redirect_url="https://shop.example/thanks?order=42",
    )
    assert repo.get_receiver(created.receiver_id) == created

    bare, _ = repo.create_receiver(new(1), derive)
    loaded = repo.get_receiver(bare.receiver_id)
    assert loaded == bare
    assert (loaded.expires_at, loaded.description, loaded.username, loaded.fiat_amount) == (
        None,
        None,
        None,
        None,
    )
    assert loaded.callback_url is None and loaded.idempotency_key is None
    assert loaded.redirect_url is None and is_public_token(loaded.public_token)
    assert isinstance(loaded.overpaid, bool) and isinstance(loaded.late, bool)


def test_missing_receiver_is_none(repo: Repository) -> None:
    assert repo.get_receiver(424242) is None


# -- the checkout page's public token ---------------------------------------------------


def test_a_receiver_is_found_by_its_public_token_and_only_by_it(repo: Repository) -> None:
    one = create(repo)
    two, _ = repo.create_receivers([new(), new()], derive)[1]
    assert one.public_token != two.public_token
    assert repo.get_receiver_by_token(one.public_token) == one
    assert repo.get_receiver_by_token(two.public_token) == two
    assert repo.get_receiver_by_token(new_public_token()) is None
    # base64url is case-sensitive: MariaDB's collation must not fold it.
    assert repo.get_receiver_by_token(one.public_token.swapcase()) is None


@pytest.mark.parametrize(
    "hostile",
    ["", "1", "' OR '1'='1' -- xxxxxxxx", "a" * 21, "a" * 23, "a" * 21 + "/", None, 7],
)
def test_a_value_that_is_not_a_token_finds_nothing(repo: Repository, hostile: object) -> None:
    create(repo)
    assert repo.get_receiver_by_token(hostile) is None  # type: ignore[arg-type]


def test_public_tokens_are_unique(repo: Repository) -> None:
    token = new_public_token()
    create(repo, public_token=token)
    with pytest.raises(Conflict, match="checkout token is already another receiver's"):
        repo.create_receiver(new(public_token=token), derive)
    assert repo.next_index(WALLET, CHAIN) == 1


def test_receivers_from_before_the_token_have_none_and_no_page(store: Store) -> None:
    repo = store.open()
    repo.migrate()
    old = create(repo)
    store.execute("UPDATE receivers SET public_token = NULL WHERE receiver_id = ?", (old.receiver_id,))
    create(repo)  # several NULL tokens do not collide in the unique index
    store.execute("UPDATE receivers SET public_token = NULL")
    assert repo.get_receiver(old.receiver_id).public_token is None


def test_indices_start_at_zero_and_are_consecutive_per_wallet_and_chain(repo: Repository) -> None:
    other = fake_address(OTHER_WALLET, CHAIN)
    change = fake_address(WALLET, 1)
    got = [repo.create_receiver(new(), derive)[0].hd_index for _ in range(3)]
    got_other = [
        repo.create_receiver(new(wallet=OTHER_WALLET), other)[0].hd_index for _ in range(2)
    ]
    got_change = repo.create_receiver(replace(new(), chain=1), change)[0].hd_index
    assert got == [0, 1, 2]
    assert got_other == [0, 1]
    assert got_change == 0
    assert repo.next_index(WALLET, CHAIN) == 3
    assert repo.next_index(OTHER_WALLET, CHAIN) == 2
    assert repo.next_index(WALLET, 1) == 1


def test_ensure_counter_creates_at_zero_and_never_resets(repo: Repository) -> None:
    assert repo.next_index(WALLET, CHAIN) == 0
    repo.ensure_counter(WALLET, CHAIN)
    assert repo.next_index(WALLET, CHAIN) == 0
    create(repo)
    create(repo)
    repo.ensure_counter(WALLET, CHAIN)
    assert repo.next_index(WALLET, CHAIN) == 2


def test_derivation_gets_the_index_it_is_stored_under(repo: Repository) -> None:
    seen: list[int] = []

    def recording(index: int) -> str:
        seen.append(index)
        return derive(index)

    receivers = [repo.create_receiver(new(), recording)[0] for _ in range(3)]
    assert seen == [0, 1, 2]
    assert [(r.hd_index, r.address) for r in receivers] == [(i, derive(i)) for i in range(3)]


@pytest.mark.parametrize("instances", [1, 2], ids=["one-instance", "two-instances"])
def test_fifty_concurrent_creates_get_fifty_distinct_consecutive_indices(
    store: Store, instances: int
) -> None:
    repos = [store.open() for _ in range(instances)]
    repos[0].migrate()
    results = in_threads(50, lambda i: repos[i % instances].create_receiver(new(i + 1), derive))
    assert all(created for _, created in results)
    indices = sorted(r.hd_index for r, _ in results)
    assert indices == list(range(50))
    assert len({r.address for r, _ in results}) == 50
    assert len({r.receiver_id for r, _ in results}) == 50
    assert repos[0].next_index(WALLET, CHAIN) == 50
    stored = repos[-1].list_receivers(wallet_id=WALLET, limit=1000)
    assert sorted((r.hd_index, r.amount_duffs) for r in stored) == sorted(
        (r.hd_index, r.amount_duffs) for r, _ in results
    )


def test_failed_derivation_rolls_back_and_leaves_no_gap(repo: Repository) -> None:
    create(repo)

    def broken(index: int) -> str:
        raise ArithmeticError(f"cannot derive {index}")

    with pytest.raises(ArithmeticError, match="cannot derive 1"):
        repo.create_receiver(new(), broken)
    assert repo.next_index(WALLET, CHAIN) == 1
    assert len(repo.list_receivers()) == 1
    assert create(repo).hd_index == 1


def test_first_create_of_a_new_wallet_that_fails_leaves_the_counter_at_zero(
    repo: Repository,
) -> None:
    def broken(index: int) -> str:
        raise ValueError("no key")

    with pytest.raises(ValueError):
        repo.create_receiver(new(), broken)
    assert repo.next_index(WALLET, CHAIN) == 0
    assert create(repo).hd_index == 0


def test_repeated_idempotency_key_returns_the_existing_receiver_without_allocating(
    repo: Repository,
) -> None:
    first, created = repo.create_receiver(new(5_000, idempotency_key="k-1"), derive)
    assert created
    again, created_again = repo.create_receiver(new(9_999, idempotency_key="k-1"), derive)
    assert not created_again
    assert again == first
    assert repo.next_index(WALLET, CHAIN) == 1
    assert create(repo).hd_index == 1


def test_idempotency_keys_compare_exactly(repo: Repository) -> None:
    lower, _ = repo.create_receiver(new(idempotency_key="order-a"), derive)
    upper, created = repo.create_receiver(new(idempotency_key="ORDER-A"), derive)
    assert created and upper.receiver_id != lower.receiver_id


def test_receivers_without_idempotency_key_do_not_collide(repo: Repository) -> None:
    assert create(repo).receiver_id != create(repo).receiver_id


def test_concurrent_creates_with_one_idempotency_key_make_one_receiver(store: Store) -> None:
    repos = [store.open(), store.open()]
    repos[0].migrate()
    results = in_threads(
        12, lambda i: repos[i % 2].create_receiver(new(idempotency_key="same"), derive)
    )
    assert sum(created for _, created in results) == 1
    assert len({r.receiver_id for r, _ in results}) == 1
    assert repos[0].next_index(WALLET, CHAIN) == 1
    assert len(repos[0].list_receivers()) == 1


def test_idempotency_race_across_wallets_returns_the_winner_without_a_gap(
    store: Store,
) -> None:
    """Two wallets do not share a counter lock, so both requests pass the key check and
    one insert hits the unique key: it must return the winner and roll back its index.
    (SQLite serialises writers, so there the second simply finds the first.)"""
    repos = [store.open(), store.open()]
    repos[0].migrate()
    both_derived = threading.Barrier(2)

    def derive_for(wallet: str):
        plain = fake_address(wallet, CHAIN)

        def derive_and_wait(index: int) -> str:
            if store.backend == "mysql":
                both_derived.wait(timeout=10)
            return plain(index)

        return derive_and_wait

    wallets = [WALLET, OTHER_WALLET]
    results = in_threads(
        2,
        lambda i: repos[i].create_receiver(
            new(wallet=wallets[i], idempotency_key="shared"), derive_for(wallets[i])
        ),
    )
    assert sorted(created for _, created in results) == [False, True]
    assert results[0][0] == results[1][0]
    winner = results[0][0]
    loser_wallet = OTHER_WALLET if winner.wallet_id == WALLET else WALLET
    assert repos[0].next_index(winner.wallet_id, CHAIN) == 1
    assert repos[0].next_index(loser_wallet, CHAIN) == 0


def test_an_address_already_in_use_is_a_conflict_and_leaves_no_gap(repo: Repository) -> None:
    taken = create(repo)
    with pytest.raises(Conflict, match=taken.address):
        repo.create_receiver(new(wallet=OTHER_WALLET), lambda index: taken.address)
    assert repo.next_index(OTHER_WALLET, CHAIN) == 0
    assert len(repo.list_receivers()) == 1


# -- creating receivers in batches -----------------------------------------------------


def test_a_batch_gets_consecutive_indices_in_request_order(repo: Repository) -> None:
    create(repo)
    seen: list[int] = []

    def recording(index: int) -> str:
        seen.append(index)
        return derive(index)

    results = repo.create_receivers([new(i + 1, description=f"n{i}") for i in range(5)], recording)
    assert [created for _, created in results] == [True] * 5
    assert [(r.hd_index, r.address, r.amount_duffs) for r, _ in results] == [
        (i + 1, derive(i + 1), i + 1) for i in range(5)
    ]
    assert seen == [1, 2, 3, 4, 5]
    assert repo.next_index(WALLET, CHAIN) == 6
    for receiver, _ in results:
        assert repo.get_receiver(receiver.receiver_id) == receiver
    assert len({r.receiver_id for r, _ in results}) == 5
    assert create(repo).hd_index == 6


def test_an_empty_batch_writes_nothing(repo: Repository) -> None:
    assert repo.create_receivers([], derive) == []
    assert repo.next_index(WALLET, CHAIN) == 0


def test_a_batch_returns_known_keys_and_repeats_within_it_without_allocating(
    repo: Repository,
) -> None:
    first = create(repo, 5_000, idempotency_key="k-1")
    results = repo.create_receivers(
        [
            new(9_999, idempotency_key="k-1"),
            new(7_000, idempotency_key="k-2"),
            new(8_000),
            new(6_000, idempotency_key="k-2"),
        ],
        derive,
    )
    assert [created for _, created in results] == [False, True, True, False]
    assert results[0][0] == first
    assert results[3][0] == results[1][0]
    assert (results[1][0].hd_index, results[1][0].amount_duffs) == (1, 7_000)
    assert results[2][0].hd_index == 2
    assert repo.next_index(WALLET, CHAIN) == 3
    assert len(repo.list_receivers()) == 3


def test_a_batch_with_only_known_keys_allocates_nothing(repo: Repository) -> None:
    first = create(repo, idempotency_key="k-1")
    assert repo.create_receivers([new(idempotency_key="k-1")], derive) == [(first, False)]
    assert repo.next_index(WALLET, CHAIN) == 1


def test_a_refused_row_rolls_the_whole_batch_back(repo: Repository) -> None:
    theirs = repo.create_receiver(new(wallet=OTHER_WALLET), lambda index: derive(1))[0]

    with pytest.raises(Conflict, match="one by one"):
        repo.create_receivers([new(), new(), new()], derive)
    assert repo.next_index(WALLET, CHAIN) == 0
    assert [r.receiver_id for r in repo.list_receivers()] == [theirs.receiver_id]
    # one by one, the first fits and the second names the taken address
    assert create(repo).hd_index == 0
    with pytest.raises(Conflict, match=theirs.address):
        repo.create_receiver(new(), derive)


def test_a_failed_derivation_in_a_batch_leaves_no_row_and_no_gap(repo: Repository) -> None:
    def broken_at_two(index: int) -> str:
        if index == 2:
            raise ArithmeticError(f"cannot derive {index}")
        return derive(index)

    with pytest.raises(ArithmeticError, match="cannot derive 2"):
        repo.create_receivers([new() for _ in range(4)], broken_at_two)
    assert repo.next_index(WALLET, CHAIN) == 0
    assert repo.list_receivers() == []


def test_a_batch_takes_one_wallet_and_a_bounded_size(repo: Repository) -> None:
    with pytest.raises(ValueError, match="one wallet and chain"):
        repo.create_receivers([new(), new(wallet=OTHER_WALLET)], derive)
    with pytest.raises(ValueError, match="one wallet and chain"):
        repo.create_receivers([new(), replace(new(), chain=1)], derive)
    with pytest.raises(ValueError, match=f"at most {MAX_CREATE_BATCH}"):
        repo.create_receivers([new()] * (MAX_CREATE_BATCH + 1), derive)
    assert repo.next_index(WALLET, CHAIN) == 0


@pytest.mark.parametrize("instances", [1, 2], ids=["one-instance", "two-instances"])
def test_concurrent_batches_and_single_creates_get_distinct_consecutive_indices(
    store: Store, instances: int
) -> None:
    repos = [store.open() for _ in range(instances)]
    repos[0].migrate()
    size = 5

    def work(i: int) -> list[tuple[Receiver, bool]]:
        repo = repos[i % instances]
        if i % 4 == 3:
            return [repo.create_receiver(new(1_000 + i), derive)]
        return repo.create_receivers([new(i * size + j + 1) for j in range(size)], derive)

    results = [item for batch in in_threads(16, work) for item in batch]
    assert all(created for _, created in results)
    count = len(results)
    assert count == 12 * size + 4
    assert sorted(r.hd_index for r, _ in results) == list(range(count))
    assert len({r.address for r, _ in results}) == count
    assert len({r.receiver_id for r, _ in results}) == count
    assert repos[0].next_index(WALLET, CHAIN) == count
    stored = repos[-1].list_receivers(wallet_id=WALLET, limit=1000)
    assert sorted((r.receiver_id, r.hd_index, r.address) for r in stored) == sorted(
        (r.receiver_id, r.hd_index, r.address) for r, _ in results
    )


def test_concurrent_batches_with_one_idempotency_key_make_one_receiver(store: Store) -> None:
    repos = [store.open(), store.open()]
    repos[0].migrate()
    results = in_threads(
        8,
        lambda i: repos[i % 2].create_receivers(
            [new(idempotency_key="same"), new(idempotency_key=f"own-{i}")], derive
        ),
    )
    shared = [pair for batch in results for pair in batch[:1]]
    assert sum(created for _, created in shared) == 1
    assert len({r.receiver_id for r, _ in shared}) == 1
    assert all(created for batch in results for _, created in batch[1:])
    assert repos[0].next_index(WALLET, CHAIN) == 9
    assert sorted(r.hd_index for r in repos[0].list_receivers()) == list(range(9))


# -- listing ---------------------------------------------------------------------------


def test_list_is_newest_first_and_pages_backwards(repo: Repository) -> None:
    ids = [create(repo, amount=i + 1).receiver_id for i in range(7)]
    newest_first = ids[::-1]
    assert [r.receiver_id for r in repo.list_receivers()] == newest_first
    page1 = repo.list_receivers(limit=3)
    page2 = repo.list_receivers(limit=3, before_id=page1[-1].receiver_id)
    page3 = repo.list_receivers(limit=3, before_id=page2[-1].receiver_id)
    assert [r.receiver_id for r in page1 + page2 + page3] == newest_first
    assert len(page3) == 1
    assert repo.list_receivers(before_id=min(ids)) == []


def test_list_filters_by_wallet_and_status(repo: Repository) -> None:
    mine = [create(repo) for _ in range(3)]
    theirs = repo.create_receiver(new(wallet=OTHER_WALLET), fake_address(OTHER_WALLET, CHAIN))[0]
    cancel(repo, mine[1].receiver_id, T0 + 1)
    assert [r.receiver_id for r in repo.list_receivers(wallet_id=OTHER_WALLET)] == [
        theirs.receiver_id
    ]
    assert [r.receiver_id for r in repo.list_receivers(wallet_id=WALLET, status=PENDING)] == [
        mine[2].receiver_id,
        mine[0].receiver_id,
    ]
    assert [r.receiver_id for r in repo.list_receivers(status=CANCELLED)] == [mine[1].receiver_id]
    assert repo.list_receivers(wallet_id=OTHER_WALLET, status=CANCELLED) == []
    assert len(repo.list_receivers(status=PENDING)) == 3


@pytest.mark.parametrize("limit", [0, -1, 1001, True, 2.5])
def test_list_refuses_a_limit_outside_1_to_1000(repo: Repository, limit: object) -> None:
    with pytest.raises(InvalidParams, match="limit must be an integer from 1 to 1000"):
        repo.list_receivers(limit=limit)  # type: ignore[arg-type]


def test_list_refuses_an_unknown_status(repo: Repository) -> None:
    with pytest.raises(InvalidParams, match="unknown status"):
        repo.list_receivers(status="lost")


def test_count_by_status_counts_one_wallet_and_names_every_status(
    store: Store, repo: Repository
) -> None:
    receivers = [create(repo) for _ in range(4)]
    repo.create_receiver(new(wallet=OTHER_WALLET), fake_address(OTHER_WALLET, CHAIN))
    cancel(repo, receivers[0].receiver_id, T0 + 1)
    force_status(store, receivers[1].receiver_id, PAID, None)
    assert repo.count_by_status(WALLET) == {
        PENDING: 2,
        PARTIAL: 0,
        PAID: 1,
        SETTLED: 0,
        EXPIRED: 0,
        CANCELLED: 1,
    }
    assert repo.count_by_status("nobody") == dict.fromkeys(STATUSES, 0)


def test_payments_are_listed_oldest_first_with_their_flags(store: Store, repo: Repository) -> None:
    receiver = create(repo)
    other = create(repo)
    insert = (
        "INSERT INTO payments (receiver_id, txid, address, amount_duffs, instant_locked,"
        " block_height, confirmations, dropped, first_seen_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    store.execute(
        insert, (receiver.receiver_id, "b" * 64, receiver.address, 7, 0, None, 0, 1, T0 + 9, T0 + 9)
    )
    store.execute(
        insert,
        (receiver.receiver_id, "a" * 64, receiver.address, 5, 1, 2_000_000, 3, 0, T0, T0 + 5),
    )
    store.execute(insert, (other.receiver_id, "a" * 64, other.address, 1, 0, None, 0, 0, T0, T0))
    payments = repo.list_payments(receiver.receiver_id)
    assert [replace(p, payment_id=0) for p in payments] == [
        Payment(
            0,
            receiver.receiver_id,
            "a" * 64,
            receiver.address,
            5,
            True,
            2_000_000,
            3,
            False,
            T0,
            T0 + 5,
        ),
        Payment(
            0,
            receiver.receiver_id,
            "b" * 64,
            receiver.address,
            7,
            False,
            None,
            0,
            True,
            T0 + 9,
            T0 + 9,
        ),
    ]
    assert repo.list_payments(424242) == []


def test_a_payment_is_unique_per_txid_and_address(store: Store, repo: Repository) -> None:
    receiver = create(repo)
    insert = (
        "INSERT INTO payments (receiver_id, txid, address, amount_duffs, first_seen_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?)"
    )
    store.execute(insert, (receiver.receiver_id, "c" * 64, receiver.address, 1, T0, T0))
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        store.execute(insert, (receiver.receiver_id, "c" * 64, receiver.address, 2, T0, T0))


# -- cancel ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [PENDING, PARTIAL])
def test_cancel_closes_a_pending_or_partial_receiver(
    store: Store, repo: Repository, status: str
) -> None:
    receiver = create(repo)
    force_status(store, receiver.receiver_id, status, None)
    cancelled = cancel(repo, receiver.receiver_id, T0 + 60_000)
    assert cancelled == replace(
        receiver, status=CANCELLED, closed_at=T0 + 60_000, updated_at=T0 + 60_000
    )
    assert repo.get_receiver(receiver.receiver_id) == cancelled


def test_cancelling_twice_returns_the_receiver_unchanged(repo: Repository) -> None:
    receiver = create(repo)
    first = cancel(repo, receiver.receiver_id, T0 + 1_000)
    again = cancel(repo, receiver.receiver_id, T0 + 9_000)
    assert again == first
    assert again.closed_at == T0 + 1_000


@pytest.mark.parametrize("status", [PAID, SETTLED, EXPIRED])
def test_cancel_refuses_a_receiver_that_is_paid_settled_or_expired(
    store: Store, repo: Repository, status: str
) -> None:
    receiver = create(repo)
    force_status(store, receiver.receiver_id, status, T0 + 5)
    with pytest.raises(Conflict, match=f"is {status}") as caught:
        cancel(repo, receiver.receiver_id, T0 + 10)
    assert caught.value.details["status"] == status
    assert repo.get_receiver(receiver.receiver_id).status == status


def test_cancel_of_a_missing_receiver_is_not_found(repo: Repository) -> None:
    with pytest.raises(NotFound, match="no receiver with id 424242"):
        cancel(repo, 424242, T0)


# -- the pending table -------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 2, 5, 10_000])
def test_iter_pending_has_open_receivers_and_recently_closed_ones(
    store: Store, repo: Repository, chunk: int
) -> None:
    window = 24 * 3600 * 1000
    now = T0 + 10 * window
    pending = create(repo, expires_at=T0 + 3_600_000)
    # another wallet's receiver between ours: a chunk boundary must not stop on it
    other_wallet = repo.create_receiver(
        new(wallet=OTHER_WALLET), fake_address(OTHER_WALLET, CHAIN)
    )[0]
    partial, paid, recent, edge, old, expired_old = (create(repo) for _ in range(6))
    force_status(store, partial.receiver_id, PARTIAL, None)
    force_status(store, paid.receiver_id, PAID, None)
    force_status(store, recent.receiver_id, SETTLED, now - 1_000)
    force_status(store, edge.receiver_id, CANCELLED, now - window)
    force_status(store, old.receiver_id, CANCELLED, now - window - 1)
    force_status(store, expired_old.receiver_id, EXPIRED, now - 2 * window)
    loaded = list(repo.iter_pending(WALLET, now, window, chunk=chunk))
    assert loaded == [
        PendingRow(pending.receiver_id, pending.address, PENDING, T0 + 3_600_000, None),
        PendingRow(partial.receiver_id, partial.address, PARTIAL, None, None),
        PendingRow(paid.receiver_id, paid.address, PAID, None, None),
        PendingRow(recent.receiver_id, recent.address, SETTLED, None, now - 1_000),
        PendingRow(edge.receiver_id, edge.address, CANCELLED, None, now - window),
    ]
    assert all(type(row.receiver_id) is int and type(row.address) is str for row in loaded)
    assert list(repo.iter_pending(OTHER_WALLET, now, window, chunk=chunk)) == [
        PendingRow(other_wallet.receiver_id, other_wallet.address, PENDING, None, None)
    ]


def test_iter_pending_reads_chunk_by_chunk(repo: Repository) -> None:
    """Each chunk is its own read resuming after the last id: a receiver created while
    the table loads is still found if it comes after the chunks already read."""
    first, second = create(repo), create(repo)
    rows = repo.iter_pending(WALLET, T0, 0, chunk=1)
    assert next(rows).receiver_id == first.receiver_id
    later = create(repo)
    assert [row.receiver_id for row in rows] == [second.receiver_id, later.receiver_id]


# -- settings --------------------------------------------------------------------------


def test_settings_keep_the_first_value_stored(repo: Repository) -> None:
    assert repo.get_setting("callback_secret") is None
    assert repo.set_setting_if_absent("callback_secret", "s3cr3t-ü") == "s3cr3t-ü"
    assert repo.set_setting_if_absent("callback_secret", "other") == "s3cr3t-ü"
    assert repo.get_setting("callback_secret") == "s3cr3t-ü"
    assert repo.get_setting("Callback_Secret") is None


def test_concurrent_set_if_absent_agrees_on_one_value(store: Store) -> None:
    repos = [store.open(), store.open()]
    repos[0].migrate()
    values = in_threads(8, lambda i: repos[i % 2].set_setting_if_absent("node", f"value-{i}"))
    assert len(set(values)) == 1
    assert repos[1].get_setting("node") == values[0]


# -- lifecycle and failures -----------------------------------------------------------


def test_a_closed_repository_is_unavailable(store: Store) -> None:
    repository = store.open()
    repository.migrate()
    repository.close()
    repository.close()
    with pytest.raises(Unavailable, match="closed"):
        repository.get_receiver(1)


def test_using_an_unmigrated_database_says_to_migrate(store: Store) -> None:
    with pytest.raises(Unavailable, match="dashpay db migrate"):
        store.open().get_receiver(1)


def test_sqlite_creates_a_private_directory_and_uses_wal(tmp_path) -> None:
    from dashpay.repository.sqlite import SqliteRepository

    path = tmp_path / "deep" / "state" / "dashpay.sqlite3"
    repository = SqliteRepository(path)
    try:
        repository.migrate()
        create(repository)
    finally:
        repository.close()
    assert path.parent.stat().st_mode & 0o777 == 0o700
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_sqlite_reports_an_unusable_path_as_unavailable(tmp_path) -> None:
    from dashpay.repository.sqlite import SqliteRepository

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(Unavailable, match=str(blocker)):
        SqliteRepository(blocker / "dashpay.sqlite3")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.mysql
def test_unreachable_mysql_is_unavailable_without_the_password(mysql_target: MysqlTarget) -> None:
    from dashpay.repository.mysql import MysqlRepository

    port = _free_port()
    with pytest.raises(Unavailable) as caught:
        MysqlRepository(
            host="127.0.0.1",
            port=port,
            user=mysql_target.user,
            password="hunter2-Secret",
            database=mysql_target.database,
            connect_timeout=2.0,
        )
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert mysql_target.database in message
    assert "refused" in message.lower()
    assert "hunter2" not in message and "hunter2" not in repr(caught.value.details)


@pytest.mark.mysql
def test_wrong_mysql_password_is_unavailable_without_the_password(
    mysql_target: MysqlTarget,
) -> None:
    from dashpay.repository.mysql import MysqlRepository

    with pytest.raises(Unavailable, match="Access denied") as caught:
        MysqlRepository(**{**_target_args(mysql_target), "password": "hunter2-Secret"})
    assert "hunter2" not in str(caught.value)
    assert "check the user name and password" in str(caught.value)


@pytest.mark.mysql
def test_missing_mysql_database_says_how_to_create_it(mysql_target: MysqlTarget) -> None:
    from dashpay.repository.mysql import MysqlRepository

    with pytest.raises(Unavailable, match="CREATE DATABASE `dashpay_missing_db`") as caught:
        MysqlRepository(**{**_target_args(mysql_target), "database": "dashpay_missing_db"})
    assert mysql_target.password not in str(caught.value)


@pytest.mark.mysql
def test_a_connection_killed_by_the_server_is_replaced(mysql_target: MysqlTarget) -> None:
    from dashpay.repository.mysql import MysqlRepository

    repository = MysqlRepository(**_target_args(mysql_target), pool_size=1)
    try:
        repository.migrate()
        receiver = create(repository)
        admin = mysql_target.connect()
        try:
            with admin.cursor() as cur:
                cur.execute("SELECT CONNECTION_ID()")
                own = cur.fetchone()[0]
                cur.execute(
                    "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> %s",
                    (mysql_target.database, own),
                )
                victims = [row[0] for row in cur.fetchall()]
                assert victims, "the pooled connection should be open"
                for victim in victims:
                    cur.execute(f"KILL CONNECTION {int(victim)}")
        finally:
            admin.close()
        assert repository.get_receiver(receiver.receiver_id) == receiver
        assert create(repository).hd_index == 1
    finally:
        repository.close()


def _target_args(target: MysqlTarget) -> dict[str, object]:
    return {
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "password": target.password,
        "database": target.database,
        "unix_socket": target.unix_socket,
    }
