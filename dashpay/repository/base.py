"""The repository contract: row types and the interface both backends implement.

The repository is the only code that speaks SQL. Every method is one unit of work
(one transaction) and is blocking: services call it through one
``trio.to_thread.run_sync`` hop per unit of work, never one per statement. The payment
engine's units of work are the exception in shape, not in rule: ``transaction(fn)``
runs the engine's ``fn(tx)`` in one transaction, and ``tx`` (a ``Transaction``) offers
only narrow reads and writes; the business rules stay in the engine and the domain.

Times are integers: unix epoch milliseconds (UTC). Money is integer duffs. Fiat
amounts and rates are Decimal text (exact, portable across SQLite and MySQL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from dashpay.domain.model import (
    AttemptOutcome,
    CallbackAttempt,
    CallbackBacklog,
    CallbackRecord,
    NewReceiver,
    OutboxEvent,
    Payment,
    PaymentObservation,
    PendingRow,
    Receiver,
    ReceiverUpdate,
)

if TYPE_CHECKING:
    from dashpay.domain.apikeys import ApiKey
    from dashpay.domain.errors import DashpayError
    from dashpay.repository.prices import PriceQuote

# Receivers created by one ``create_receivers`` call (one transaction). The receiver
# service fills a batch from the requests waiting when it starts one; 16 per commit
# already lifts creation from ~2,700/s to ~6,100/s on SQLite and ~940/s to ~2,900/s on
# MariaDB (benchmarks/README.md), and a bound keeps the counter lock (held while every
# address of the batch is derived, ~130 µs each) to a few milliseconds.
MAX_CREATE_BATCH = 32

T = TypeVar("T")


class Transaction(Protocol):
    """One open write transaction (valid only inside ``Repository.transaction``): the
    narrow operations of the payment write path. Nothing here decides anything."""

    def get_receiver(self, receiver_id: int, *, lock: bool = True) -> Receiver | None:
        """One receiver, locked until commit unless ``lock`` is False."""

    def lock_receivers(self, ids: Sequence[int]) -> dict[int, Receiver]:
        """The receivers of ``ids`` that exist, locked in ascending id order (every
        writer takes them in that order, so writers never deadlock)."""

    def payments_of(self, ids: Sequence[int]) -> dict[int, list[Payment]]:
        """Every payment of each receiver of ``ids`` (ascending), in payment id order;
        each id maps to a list, empty when it has none."""

    def lock_receivers_with_payments(
        self, ids: Sequence[int]
    ) -> tuple[dict[int, Receiver], dict[int, list[Payment]]]:
        """``lock_receivers`` and ``payments_of`` in one statement: the receivers of
        ``ids`` that exist, locked in ascending id order, and every payment of each
        (in payment id order; an empty list for a receiver without)."""

    def insert_payment(self, receiver_id: int, seen: PaymentObservation, now: int) -> Payment:
        """Insert a new payment row for ``seen``; the row as stored. Conflict when
        (txid, address) is recorded for another receiver."""

    def write_payment(self, payment: Payment) -> None:
        """Store a payment's lock, height, confirmations, dropped and updated_at."""

    def write_receivers(self, updates: Sequence[tuple[int, ReceiverUpdate]]) -> None:
        """Write receivers' new states, one entry per receiver in ascending id order,
        in as few statements as the backend allows."""

    def enqueue(self, events: Sequence[OutboxEvent]) -> None:
        """Insert outbox rows in one multi-row INSERT, in order (enqueue order).
        Conflict for an event id given twice or already stored."""

    def record_callback_attempts(
        self, attempts: Sequence[tuple[str, AttemptOutcome]]
    ) -> list[DashpayError | None]:
        """``Repository.record_callback_attempts`` inside this transaction (delivery
        outcomes carried by a payment unit of work)."""


class Repository(Protocol):
    """Interface of a store. Implementations: ``sqlite.SqliteRepository`` and
    ``mysql.MysqlRepository``. Errors: ``dashpay.errors.NotFound`` /
    ``Conflict`` for request problems, ``dashpay.errors.Unavailable`` when the
    database cannot be reached (the message says which and why, without password)."""

    backend: str  # "sqlite" or "mysql"

    def migrate(self) -> list[int]:
        """Apply pending migrations in order; return the versions applied (may be empty).
        Safe to call concurrently from several processes."""

    def schema_version(self) -> int: ...

    def close(self) -> None: ...

    def ensure_counter(self, wallet_id: str, chain: int) -> None:
        """Create the HD child counter for (wallet, chain) at 0 if it does not exist."""

    def next_index(self, wallet_id: str, chain: int) -> int:
        """The HD index the next created receiver will get."""

    def create_receiver(
        self, new: NewReceiver, derive_address: Callable[[int], str]
    ) -> tuple[Receiver, bool]:
        """Allocate the next HD index, derive its address and insert the receiver, in
        one transaction: concurrent callers never share an index and a failure leaves
        no gap. With an ``idempotency_key`` that already exists, return
        ``(existing, False)`` without allocating; else ``(new_receiver, True)``."""

    def create_receivers(
        self, batch: Sequence[NewReceiver], derive_address: Callable[[int], str]
    ) -> list[tuple[Receiver, bool]]:
        """``create_receiver`` for up to ``MAX_CREATE_BATCH`` receivers of one (wallet,
        chain) in ONE transaction: one counter lock and bump, consecutive indices in the
        order of ``batch``, results in that order. A request whose ``idempotency_key``
        exists, or was taken by an earlier request of the batch, gets ``(that receiver,
        False)`` and allocates nothing. All or nothing: if the database refuses any row
        (Conflict when a unique key does; derivation errors and other database errors
        are raised as they are), nothing is written and no index is used; callers then
        create the receivers one by one to tell which request was refused."""

    def unpaid_gap(self, wallet_id: str, chain: int) -> int:
        """Consecutive never-paid addresses at the end of (wallet, chain)."""

    def get_receiver(self, receiver_id: int) -> Receiver | None: ...

    def get_receiver_by_token(self, public_token: str) -> Receiver | None:
        """The receiver whose checkout page this is (``NewReceiver.public_token``), or
        None: also for a value without a token's shape, which is never queried."""

    def list_receivers(
        self,
        *,
        wallet_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[Receiver]:
        """Newest first (highest receiver_id first); ``before_id`` pages backwards."""

    def iter_pending(
        self, wallet_id: str, now: int, monitor_window: int, *, chunk: int = ...
    ) -> Iterator[PendingRow]:
        """Every receiver of the wallet that is not final, plus final ones whose
        ``closed_at`` is within ``monitor_window`` ms of ``now``, in receiver id order.
        Lazy: rows are read ``chunk`` at a time, each chunk its own short read (keyset
        on receiver_id), so neither the driver nor the server buffers the whole set."""

    def count_by_status(self, wallet_id: str) -> dict[str, int]: ...

    def list_payments(self, receiver_id: int) -> list[Payment]:
        """Oldest first."""

    def holding_payments(self, ids: Sequence[int]) -> set[int]:
        """The receivers of ``ids`` that hold a payment not dropped (one read)."""

    def get_setting(self, name: str) -> str | None: ...

    def set_setting_if_absent(self, name: str, value: str) -> str:
        """Store ``value`` unless the setting exists; return the value now stored."""

    def transaction(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn(tx)`` in ONE write transaction: commit when it returns (its value
        is returned), roll everything back and re-raise when it raises. MySQL may run
        ``fn`` again after a deadlock or a connection lost before COMMIT (the server
        rolled the first run back), so ``fn`` must keep no state between runs. Units
        of work: ``dashpay.engine.record.record_batch`` and ``cancel_receiver``."""

    def try_transaction(self, fn: Callable[[Transaction], T]) -> tuple[bool, T | None]:
        """``transaction(fn)`` on the calling thread, only if it cannot block there
        (SQLite in WAL mode with its connection free and no other process writing; a
        network server never): ``(True, result)``, else ``(False, None)`` without
        running ``fn``. The payment engine asks this for a small unit of work before
        hopping to a worker thread."""

    def list_outbox(
        self, *, receiver_id: int | None = None, status: str | None = None, limit: int = 100
    ) -> list[OutboxEvent]:
        """Callback events, oldest (enqueue order) first."""

    def due_callbacks(
        self, wallet_id: str, now: int, limit: int
    ) -> tuple[list[CallbackRecord], int | None]:
        """The callbacks to deliver now: for every receiver of the wallet, its oldest
        pending event (its head), if that is due (``next_attempt_at <= now``); at most
        ``limit``, earliest due first. Later events of a receiver are never returned
        while an earlier one is pending, which is what keeps a receiver's events in
        order. Also returns the earliest ``next_attempt_at`` after ``now`` of any
        pending event of the wallet (a lower bound for when to look again), or None."""

    def record_callback_attempt(self, event_id: str, outcome: AttemptOutcome) -> OutboxEvent:
        """Log one attempt and apply its outcome to the event in ONE transaction:
        attempts + 1, status, ``next_attempt_at``, ``delivered_at``, ``last_error``, and
        ``first_attempt_at`` if it was not set. Raises NotFound for an unknown event and
        Conflict for an event that is not pending (nothing is written then)."""

    def record_callback_attempts(
        self, attempts: Sequence[tuple[str, AttemptOutcome]]
    ) -> list[DashpayError | None]:
        """``record_callback_attempt`` for several events in ONE transaction (the
        attempts that finished together): for each item, in order, None when it was
        written, or the NotFound / Conflict that kept it out (nothing is written for
        that item; the others still are). A malformed outcome raises ValueError before
        anything is written."""

    def pending_callback_receivers(
        self, wallet_id: str, receiver_ids: Sequence[int] | None = None
    ) -> set[int]:
        """The receivers of the wallet that have at least one pending event (among
        ``receiver_ids`` when given, else all of them)."""

    def retry_callback(self, event_id: str, wallet_id: str, now: int) -> OutboxEvent:
        """Queue an event for delivery again now, keeping its event id: a failed or
        delivered event becomes pending, a pending one is due at once. The give-up
        horizon starts again. Raises NotFound (also for another wallet's event)."""

    def retry_failed_callbacks(
        self, wallet_id: str, now: int, *, receiver_id: int | None = None
    ) -> int:
        """``retry_callback`` for every failed event of the wallet (or of one of its
        receivers); returns how many were queued again."""

    def get_callback(self, event_id: str) -> tuple[CallbackRecord, list[CallbackAttempt]] | None:
        """One event and its attempts, oldest first (the newest ``MAX_ATTEMPTS_SHOWN``)."""

    def list_callbacks(
        self,
        *,
        wallet_id: str | None = None,
        receiver_id: int | None = None,
        status: str | None = None,
        limit: int = 50,
        before_seq: int | None = None,
    ) -> list[CallbackRecord]:
        """Newest first (highest seq first); ``before_seq`` pages backwards."""

    def callback_backlog(self, wallet_id: str) -> CallbackBacklog:
        """How many events of the wallet are pending and failed, and when the oldest
        pending one was enqueued."""

    # Price cache (dashpay.repository.prices.PriceCacheMixin) -------------------------
    def save_quote(self, quote: PriceQuote) -> PriceQuote:
        """Store an accepted quote as its currency's cached quote unless the stored one
        is newer; return the quote now stored. InvalidParams for a malformed quote."""

    def get_quote(self, currency: str) -> PriceQuote | None:
        """The cached quote of a currency (any age), or None."""

    def list_quotes(self) -> list[PriceQuote]:
        """Every cached quote, by currency code."""

    # API keys (dashpay.repository.apikeys.ApiKeysMixin) -------------------------------
    def create_api_key(
        self, label: str, scopes: frozenset[str], token_hash: str, prefix: str, created_at: int
    ) -> ApiKey:
        """Store a new key's hash, label, scopes and display prefix; the key as stored."""

    def list_api_keys(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""

    def find_api_key(self, token_hash: str) -> tuple[ApiKey, str] | None:
        """The key stored with ``token_hash`` (revoked or not) and its stored hash."""

    def active_api_keys(self) -> list[tuple[ApiKey, str]]:
        """Every key not revoked, with its stored hash."""

    def revoke_api_key(self, key_id: int, now: int) -> ApiKey:
        """Set ``revoked_at`` (kept if already set); NotFound for an unknown id."""

    def touch_api_keys(self, used: Sequence[tuple[int, int]]) -> None:
        """Move ``last_used_at`` forward for ``(id, at)`` pairs, in one transaction."""
