"""``SqlRepository``: the ``Repository`` interface written once over DB-API cursors,
for both backends (see ``schema`` for the shared SQL text). It holds the hooks a
backend implements, the HD counters, receiver creation and the reads, the settings,
and ``transaction``, which hands the engine a ``SqlTransaction`` to drive. The outbox,
the price cache and the API keys are mixins of their own files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from dashpay.domain.errors import Conflict, InvalidParams, Unavailable
from dashpay.domain.model import NewReceiver, Payment, PendingRow, Receiver, ReceiverUpdate
from dashpay.domain.status import PENDING, STATUSES
from dashpay.domain.tokens import is_public_token
from dashpay.repository.apikeys import ApiKeysMixin
from dashpay.repository.base import MAX_CREATE_BATCH
from dashpay.repository.locks import Fence, WalletLease, ownership_lost
from dashpay.repository.outbox import OutboxMixin
from dashpay.repository.prices import PriceCacheMixin
from dashpay.repository.schema import (
    INSERT_RECEIVER,
    NEW_RECEIVER_FIELDS,
    NOT_FINAL_STATUSES,
    PENDING_CHUNK,
    SELECT_PAYMENT,
    SELECT_RECEIVER,
    UPDATE_RECEIVER,
    check_limit,
    in_lists,
    insert_receivers_sql,
    payment_from_row,
    plain,
    receiver_from_row,
    update_values,
    where_clause,
)
from dashpay.repository.transaction import SqlTransaction

T = TypeVar("T")


# -- the shared units of work --------------------------------------------------------


class DuplicateAddress(Exception):
    """Internal: the derived address already belongs to another receiver."""


class DuplicateToken(Exception):
    """Internal: the new receiver's public (checkout) token is another receiver's."""


class BatchRefused(Exception):
    """Internal: a unique key refused one of the rows of a multi-row insert."""


def _created_receiver(receiver_id: int, index: int, address: str, new: NewReceiver) -> Receiver:
    """The row an insert of ``new`` at ``index`` just wrote, without reading it back."""
    return Receiver(
        receiver_id=receiver_id,
        hd_index=index,
        address=address,
        received_duffs=0,
        status=PENDING,
        overpaid=False,
        late=False,
        updated_at=new.created_at,
        paid_at=None,
        settled_at=None,
        closed_at=None,
        **{name: getattr(new, name) for name in NEW_RECEIVER_FIELDS},
    )


class SqlRepository(OutboxMixin, PriceCacheMixin, ApiKeysMixin):
    """The ``Repository`` interface written once over DB-API cursors. Subclasses
    provide the transport; see the module docstring for the hooks."""

    backend: str
    # Appended to a SELECT that must lock the rows it reads until commit.
    _for_update: str = ""
    # After "FROM receivers": read in primary key order (see iter_pending).
    _primary_key_scan: str = ""
    # Rows to values; a backend whose driver always returns text as str uses the
    # cheaper payment_from_text_row / receiver_from_text_row.
    _receiver_from_row = staticmethod(receiver_from_row)
    _payment_from_row = staticmethod(payment_from_row)
    # The database server's clock in epoch milliseconds, as SQL (the lease's expiry is
    # never the daemons' clocks), and the two-argument maximum.
    _server_now_ms: str = ""
    _greatest: str = "GREATEST"
    # Set while this process owns a wallet's lease (WalletLease): every write
    # transaction then ends with the fence (see _fence).
    fence: Fence | None = None
    # When a fenced statement last renewed the lease (time.monotonic(); 0: never):
    # ``WalletLease.alive`` needs no transaction of its own while writes renew it.
    fence_renewed_at: float = 0.0

    # Hooks -----------------------------------------------------------------------
    def _read(self, work: Callable[[Any], T]) -> T:
        """Run ``work(cursor)`` as a read-only unit of work."""
        raise NotImplementedError

    def _write(self, work: Callable[[Any], T], *, fenced: bool = True) -> T:
        """Run ``work(cursor)`` in one write transaction: commit if it returns, roll
        back and re-raise if it raises. With ``fenced`` (all but the lease's own
        transactions) ``_fence`` is its last statement before COMMIT."""
        raise NotImplementedError

    def _fence(self, cur: Any) -> None:
        """The one statement that fences a wallet owner's write transaction (payments,
        receivers, outbox, HD counter, callback outcomes alike): renew the lease where
        it still names this owner at its epoch, or raise ``ownership_lost`` (the
        transaction rolls back). Last, not first: the lease row is then locked only
        for the COMMIT, so the owner's concurrent transactions barely queue on it. On
        one server a takeover's UPDATE and this one are ordered by the row lock; on
        Galera both write the row, so whichever certifies second fails with a deadlock
        (1213) and its retry finds the new epoch. expires_at strictly grows (+1), so
        the row always changes and always replicates."""
        fence = self.fence
        if fence is None:
            return
        sql = self._fence_sql
        if sql is None:
            sql = type(self)._fence_sql = (
                f"UPDATE wallet_leases SET expires_at = {self._greatest}(expires_at + 1,"
                f" {self._server_now_ms} + ?) WHERE wallet_id = ? AND owner = ? AND epoch = ?"
            )
        params = (fence.lease_ms, fence.wallet_id, fence.owner, fence.epoch)
        if self._execute(cur, sql, params).rowcount != 1:
            raise self._lease_lost(fence)
        self.fence_renewed_at = time.monotonic()

    def _lease_lost(self, fence: Fence) -> Unavailable:
        """The error of a fenced write that found the lease taken over; the next
        ``alive`` asks the database again."""
        self.fence_renewed_at = 0.0
        return ownership_lost(fence)

    _fence_sql: str | None = None

    def owner_lock(self, name: str, *, lease_seconds: float) -> Any:
        """The wallet's ownership: a ``WalletLease`` on its row of ``wallet_leases``
        (SQLite overrides this with its file lock). ``name`` is the wallet id."""
        return WalletLease(self, name, lease_seconds)

    def _execute(self, cursor: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor.execute(sql, tuple(params))
        return cursor

    def _executemany(self, cursor: Any, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        """One statement for many parameter rows (a multi-row INSERT where the driver
        can make one)."""
        cursor.executemany(sql, rows)
        return cursor

    def _insert_if_absent_sql(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        """An INSERT of ``columns`` that does nothing when ``key`` already exists."""
        raise NotImplementedError

    def _is_unique_violation(self, exc: BaseException) -> bool:
        raise NotImplementedError

    # Counters --------------------------------------------------------------------
    def ensure_counter(self, wallet_id: str, chain: int) -> None:
        self._write(lambda cur: self._create_counter(cur, wallet_id, chain))

    def next_index(self, wallet_id: str, chain: int) -> int:
        def work(cur: Any) -> int:
            self._execute(
                cur,
                "SELECT next_index FROM hd_counters WHERE wallet_id = ? AND chain = ?",
                (wallet_id, chain),
            )
            row = cur.fetchone()
            return 0 if row is None else int(row[0])

        return self._read(work)

    def unpaid_gap(self, wallet_id: str, chain: int) -> int:
        """Consecutive derived addresses at the end of the chain that never received
        anything: what a wallet's gap limit is compared against."""

        def work(cur: Any) -> int:
            self._execute(
                cur,
                "SELECT next_index FROM hd_counters WHERE wallet_id = ? AND chain = ?",
                (wallet_id, chain),
            )
            row = cur.fetchone()
            next_index = 0 if row is None else int(row[0])
            # Walked from the newest index down (receivers_hd_uq backwards), stopping at
            # the first paid receiver: it reads the gap, not the wallet's every row
            # (MAX() with the extra condition read them all: 0.6 s at 1M receivers).
            self._execute(
                cur,
                "SELECT hd_index FROM receivers"
                " WHERE wallet_id = ? AND chain = ? AND received_duffs > 0"
                " ORDER BY hd_index DESC LIMIT 1",
                (wallet_id, chain),
            )
            row = cur.fetchone()
            last_paid = -1 if row is None or row[0] is None else int(row[0])
            return next_index - 1 - last_paid

        return self._read(work)

    def _create_counter(self, cur: Any, wallet_id: str, chain: int) -> None:
        sql = self._insert_if_absent_sql(
            "hd_counters", ("wallet_id", "chain", "next_index"), ("wallet_id", "chain")
        )
        self._execute(cur, sql, (wallet_id, chain, 0))

    def _lock_counter(self, cur: Any, wallet_id: str, chain: int) -> int:
        """The counter's value, locked until the transaction ends (created at 0 if
        missing)."""
        sql = (
            "SELECT next_index FROM hd_counters WHERE wallet_id = ? AND chain = ?"
            + self._for_update
        )
        row = self._execute(cur, sql, (wallet_id, chain)).fetchone()
        if row is None:
            self._create_counter(cur, wallet_id, chain)
            row = self._execute(cur, sql, (wallet_id, chain)).fetchone()
        return int(row[0])

    # Receivers -------------------------------------------------------------------
    def create_receiver(
        self, new: NewReceiver, derive_address: Callable[[int], str]
    ) -> tuple[Receiver, bool]:
        key = new.idempotency_key

        def work(cur: Any) -> tuple[Receiver, bool]:
            # Lock the counter first: a concurrent caller with the same key and wallet
            # waits here, then sees the winner's committed row in the check below.
            index = self._lock_counter(cur, new.wallet_id, new.chain)
            if key is not None:
                existing = self._receiver_where(cur, "idempotency_key = ?", key)
                if existing is not None:
                    return existing, False
            address = derive_address(index)
            values = [index, address, PENDING, new.created_at]
            values += [getattr(new, name) for name in NEW_RECEIVER_FIELDS]
            try:
                self._execute(cur, INSERT_RECEIVER, values)
            except Exception as exc:
                if not self._is_unique_violation(exc):
                    raise
                # The statement failed, the transaction did not. Either another
                # wallet's creator committed the same idempotency key first (return its
                # row like any repeated request), or the address is taken.
                if key is not None:
                    winner = self._receiver_where(cur, "idempotency_key = ?", key)
                    if winner is not None:
                        return winner, False
                token = new.public_token
                if token is not None and self._receiver_where(cur, "public_token = ?", token):
                    raise DuplicateToken from exc
                raise DuplicateAddress(address, index) from exc
            receiver_id = int(cur.lastrowid)
            self._execute(
                cur,
                "UPDATE hd_counters SET next_index = ? WHERE wallet_id = ? AND chain = ?",
                (index + 1, new.wallet_id, new.chain),
            )
            return _created_receiver(receiver_id, index, address, new), True

        try:
            return self._write(work)
        except DuplicateToken:
            raise Conflict(
                "the receiver's checkout token is already another receiver's; nothing was "
                "written: create it again (a new token is drawn per request)"
            ) from None
        except DuplicateAddress as exc:
            address, index = exc.args
            raise Conflict(
                f"address {address} (HD index {index} of wallet {new.wallet_id} chain "
                f"{new.chain}) is already used by another receiver: the HD counter is behind "
                "the receivers table; set hd_counters.next_index past the highest used index",
                address=address,
                hd_index=index,
            ) from None

    def create_receivers(
        self, batch: Sequence[NewReceiver], derive_address: Callable[[int], str]
    ) -> list[tuple[Receiver, bool]]:
        if not batch:
            return []
        wallet_id, chain = batch[0].wallet_id, batch[0].chain
        if any((new.wallet_id, new.chain) != (wallet_id, chain) for new in batch):
            raise ValueError("create_receivers takes receivers of one wallet and chain")
        if len(batch) > MAX_CREATE_BATCH:
            raise ValueError(f"at most {MAX_CREATE_BATCH} receivers per call, got {len(batch)}")
        keys = sorted({new.idempotency_key for new in batch if new.idempotency_key is not None})

        def work(cur: Any) -> list[tuple[Receiver, bool]]:
            # The counter lock comes first, as in create_receiver: a concurrent creator
            # with one of these keys has committed (and is found below) or waits.
            first = self._lock_counter(cur, wallet_id, chain)
            known: dict[str, Receiver] = {}
            if keys:
                marks = ", ".join("?" * len(keys))
                sql = f"{SELECT_RECEIVER} WHERE idempotency_key IN ({marks})"
                for receiver in self._receivers(self._execute(cur, sql, keys)):
                    known[receiver.idempotency_key] = receiver  # type: ignore[index]
            # Each entry: an existing receiver, or the batch position of a new row.
            plan: list[Receiver | int] = []
            rows: list[tuple[int, str, NewReceiver]] = []
            claimed: dict[str, int] = {}  # key -> position of the new row that takes it
            for new in batch:
                key = new.idempotency_key
                if key is not None and key in known:
                    plan.append(known[key])
                elif key is not None and key in claimed:
                    plan.append(claimed[key])
                else:
                    index = first + len(rows)
                    if key is not None:
                        claimed[key] = len(rows)
                    plan.append(len(rows))
                    rows.append((index, derive_address(index), new))
            if not rows:
                return [(receiver, False) for receiver in plan]  # type: ignore[misc]
            values: list[Any] = []
            for index, address, new in rows:
                values += [index, address, PENDING, new.created_at]
                values += [getattr(new, name) for name in NEW_RECEIVER_FIELDS]
            try:
                self._execute(cur, insert_receivers_sql(len(rows)), values)
            except Exception as exc:
                if not self._is_unique_violation(exc):
                    raise
                raise BatchRefused from exc
            ids = dict(
                self._execute(
                    cur,
                    "SELECT hd_index, receiver_id FROM receivers"
                    " WHERE wallet_id = ? AND chain = ? AND hd_index >= ? AND hd_index < ?",
                    (wallet_id, chain, first, first + len(rows)),
                ).fetchall()
            )
            self._execute(
                cur,
                "UPDATE hd_counters SET next_index = ? WHERE wallet_id = ? AND chain = ?",
                (first + len(rows), wallet_id, chain),
            )
            made = [
                _created_receiver(int(ids[index]), index, address, new)
                for index, address, new in rows
            ]
            seen: set[int] = set()
            results: list[tuple[Receiver, bool]] = []
            for step in plan:
                if isinstance(step, Receiver):
                    results.append((step, False))
                else:  # the first request for a row created it; a repeat in the batch did not
                    results.append((made[step], step not in seen))
                    seen.add(step)
            return results

        try:
            return self._write(work)
        except BatchRefused:
            raise Conflict(
                "the database refused a receiver of this batch (an address or idempotency "
                "key is already taken); nothing was written: create them one by one to "
                "find which",
            ) from None

    def _receivers(self, cursor: Any) -> list[Receiver]:
        convert = self._receiver_from_row
        return [convert(row) for row in cursor.fetchall()]

    def get_receiver(self, receiver_id: int) -> Receiver | None:
        return self._read(lambda cur: self._receiver_where(cur, "receiver_id = ?", receiver_id))

    def get_receiver_by_token(self, public_token: str) -> Receiver | None:
        if not is_public_token(public_token):
            return None
        return self._read(lambda cur: self._receiver_where(cur, "public_token = ?", public_token))

    def _receiver_where(
        self, cur: Any, condition: str, value: Any, *, lock: bool = False
    ) -> Receiver | None:
        sql = f"{SELECT_RECEIVER} WHERE {condition}" + (self._for_update if lock else "")
        row = self._execute(cur, sql, (value,)).fetchone()
        return None if row is None else self._receiver_from_row(row)

    def list_receivers(
        self,
        *,
        wallet_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[Receiver]:
        check_limit(limit)
        if status is not None and status not in STATUSES:
            raise InvalidParams(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        where, params = where_clause(
            (
                ("wallet_id = ?", wallet_id),
                ("status = ?", status),
                ("receiver_id < ?", before_id),
            )
        )
        sql = f"{SELECT_RECEIVER}{where} ORDER BY receiver_id DESC LIMIT ?"
        params.append(limit)
        return self._read(lambda cur: self._receivers(self._execute(cur, sql, params)))

    def iter_pending(
        self, wallet_id: str, now: int, monitor_window: int, *, chunk: int = PENDING_CHUNK
    ) -> Iterator[PendingRow]:
        marks = ", ".join("?" * len(NOT_FINAL_STATUSES))
        # Keyset on the primary key: every chunk resumes after the last id read, so
        # the whole load is one pass over the table however many chunks it takes.
        sql = (
            "SELECT receiver_id, address, status, expires_at, closed_at FROM receivers"
            f"{self._primary_key_scan} WHERE receiver_id > ? AND wallet_id = ?"
            f" AND (status IN ({marks}) OR closed_at >= ?) ORDER BY receiver_id LIMIT ?"
        )
        cutoff = now - monitor_window
        after = 0  # ids start at 1
        while True:
            params = (after, wallet_id, *NOT_FINAL_STATUSES, cutoff, chunk)
            rows = self._read(lambda cur, p=params: self._execute(cur, sql, p).fetchall())
            if all(type(row[1]) is str and type(row[2]) is str for row in rows):
                yield from map(PendingRow._make, rows)  # text already (SQLite): as they are
            else:
                for receiver_id, address, status, expires_at, closed_at in rows:
                    yield PendingRow(
                        receiver_id, plain(address), plain(status), expires_at, closed_at
                    )
            if len(rows) < chunk:
                return
            after = rows[-1][0]

    def count_by_status(self, wallet_id: str) -> dict[str, int]:
        sql = "SELECT status, COUNT(*) FROM receivers WHERE wallet_id = ? GROUP BY status"
        rows = self._read(lambda cur: self._execute(cur, sql, (wallet_id,)).fetchall())
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({plain(status): int(count) for status, count in rows})
        return counts

    def list_payments(self, receiver_id: int) -> list[Payment]:
        sql = f"{SELECT_PAYMENT} WHERE receiver_id = ? ORDER BY first_seen_at, payment_id"
        rows = self._read(lambda cur: self._execute(cur, sql, (receiver_id,)).fetchall())
        return [self._payment_from_row(row) for row in rows]

    def holding_payments(self, ids: Sequence[int]) -> set[int]:
        sql = "SELECT DISTINCT receiver_id FROM payments WHERE dropped = 0 AND receiver_id IN "

        def work(cur: Any) -> set[int]:
            found: set[int] = set()
            for chunk, params in in_lists(sorted(ids)):
                rows = self._execute(cur, f"{sql}({chunk})", params).fetchall()
                found.update(row[0] for row in rows)
            return found

        return self._read(work) if ids else set()

    # The engine's units of work ---------------------------------------------------
    def transaction(self, fn: Callable[[SqlTransaction], T]) -> T:
        """Run ``fn(tx)`` in ONE write transaction: commit if it returns, roll back
        everything and re-raise if it raises. MySQL may run ``fn`` again on a fresh
        connection after a deadlock or a connection lost before COMMIT (the server
        rolled the first run back), so ``fn`` must not keep state between runs."""
        return self._write(self._transaction_work(fn), fenced=False)

    def try_transaction(self, fn: Callable[[SqlTransaction], T]) -> tuple[bool, T | None]:
        """``transaction(fn)`` on the calling thread when that cannot block:
        ``(True, result)``; else ``(False, None)`` without running ``fn`` (the caller
        hops to a worker thread). A network server always blocks: here, always the
        latter (SQLite overrides it)."""
        return False, None

    def _transaction_work(self, fn: Callable[[SqlTransaction], T]) -> Callable[[Any], T]:
        """``fn`` as a cursor's unit of work, fenced by its own statement unless one of
        its writes already was (``SqlTransaction.fenced``)."""

        def work(cur: Any) -> T:
            tx = SqlTransaction(self, cur)
            result = fn(tx)
            if not tx.fenced:  # else the receivers' UPDATE renewed the lease already
                self._fence(cur)
            return result

        return work

    def _write_receiver_updates(
        self, cur: Any, updates: Sequence[tuple[int, ReceiverUpdate]], *, fence: bool = False
    ) -> bool:
        """Write each receiver's new state: one executemany of the UPDATE here (the
        driver loops in C); MySQL overrides this with one statement per chunk, which
        saves a round trip per receiver. With ``fence`` a backend may fold the
        transaction's fence into the same statement (MySQL does): it returns True
        when it did, and the transaction then needs no fence statement of its own."""
        self._executemany(
            cur, UPDATE_RECEIVER, [(*update_values(update), rid) for rid, update in updates]
        )
        return False

    # Settings --------------------------------------------------------------------
    def get_setting(self, name: str) -> str | None:
        sql = "SELECT value FROM settings WHERE name = ?"
        row = self._read(lambda cur: self._execute(cur, sql, (name,)).fetchone())
        return None if row is None else plain(row[0])

    def set_setting_if_absent(self, name: str, value: str) -> str:
        insert = self._insert_if_absent_sql("settings", ("name", "value"), ("name",))

        def work(cur: Any) -> str:
            self._execute(cur, insert, (name, value))
            row = self._execute(cur, "SELECT value FROM settings WHERE name = ?", (name,))
            return plain(row.fetchone()[0])

        return self._write(work)
