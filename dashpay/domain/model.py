"""The domain's values: receivers, payments, outbox events and the units of work
the engine records. Frozen dataclasses and tuples; stdlib only.

Times are integers: unix epoch milliseconds (UTC). Money is integer duffs. Fiat
amounts and rates are Decimal text (exact, portable across SQLite and MySQL).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from decimal import Decimal
from operator import attrgetter
from typing import NamedTuple

from dashpay.domain.tokens import new_public_token


@dataclass(frozen=True, slots=True)
class NewReceiver:
    """What a service asks the repository to create (the address is derived inside
    the creating transaction from the HD index it allocates)."""

    wallet_id: str
    chain: int
    amount_duffs: int
    created_at: int
    expires_at: int | None = None
    fiat_amount: str | None = None
    fiat_currency: str | None = None
    rate: str | None = None
    rate_provider: str | None = None
    rate_fetched_at: int | None = None
    callback_url: str | None = None
    description: str | None = None
    username: str | None = None
    idempotency_key: str | None = None
    # Where the checkout page sends the customer when done (an http(s) URL).
    redirect_url: str | None = None
    # The checkout page's public id (domain/tokens.py), made here for every new receiver.
    public_token: str = field(default_factory=new_public_token)


@dataclass(frozen=True, slots=True)
class Receiver:
    receiver_id: int
    wallet_id: str
    chain: int
    hd_index: int
    address: str
    amount_duffs: int
    received_duffs: int
    status: str
    overpaid: bool
    late: bool
    created_at: int
    updated_at: int
    expires_at: int | None
    paid_at: int | None
    settled_at: int | None
    closed_at: int | None  # when it became settled, expired or cancelled
    fiat_amount: str | None
    fiat_currency: str | None
    rate: str | None
    rate_provider: str | None
    rate_fetched_at: int | None
    callback_url: str | None
    description: str | None
    username: str | None
    idempotency_key: str | None
    # None for receivers made before schema version 3 (they have no checkout page).
    public_token: str | None = None
    redirect_url: str | None = None


class PendingRow(NamedTuple):
    """The five columns of a receiver the pending table keeps (``iter_pending``): a
    plain tuple, so loading a million of them never builds full ``Receiver`` rows."""

    receiver_id: int
    address: str
    status: str
    expires_at: int | None
    closed_at: int | None


@dataclass(frozen=True, slots=True)
class Payment:
    """One transaction's credit to one receiver address, keyed by (txid, address)."""

    payment_id: int
    receiver_id: int
    txid: str
    address: str
    amount_duffs: int  # sum of all outputs of that tx to that address
    instant_locked: bool
    block_height: int | None
    confirmations: int
    dropped: bool
    first_seen_at: int
    updated_at: int
    # When the chain source was first found not to show it, in the current streak of
    # absences (None: shown at the last check). See ``accounting.absence``.
    missing_since: int | None = None


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    event_id: str  # stable across retries; sent as Dashpay-Delivery
    receiver_id: int
    event: str
    payload: str  # JSON text, exactly what is POSTed
    status: str
    attempts: int
    next_attempt_at: int
    created_at: int
    delivered_at: int | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class CallbackRecord:
    """An outbox row with what the sender and the CLI need around it."""

    seq: int  # enqueue order; a receiver's events are delivered in this order
    event: OutboxEvent
    wallet_id: str  # of the receiver: a daemon only delivers its own wallet's events
    callback_url: str | None  # the receiver's own URL; None: the configured default
    first_attempt_at: int | None  # start of the give-up horizon; reset by a manual retry


@dataclass(frozen=True, slots=True)
class CallbackAttempt:
    """One delivery attempt, as logged."""

    attempt_id: int
    event_id: str
    attempted_at: int
    http_status: int | None  # None: no HTTP answer (network error, timeout, refused)
    error: str | None  # None for a 2xx
    duration_ms: int


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What the sender learned from one attempt and what becomes of the event:
    ``status`` delivered, pending (retry at ``next_attempt_at``) or failed."""

    attempted_at: int
    duration_ms: int
    http_status: int | None
    error: str | None
    status: str  # one of OUTBOX_STATUSES
    next_attempt_at: int | None = None  # required when status is pending


@dataclass(frozen=True, slots=True)
class CallbackBacklog:
    pending: int
    failed: int
    oldest_pending_created_at: int | None


@dataclass(frozen=True, slots=True)
class PaymentObservation:
    """One transaction's credit to one address, as Insight reported it just now."""

    txid: str  # 64 lowercase hex characters
    address: str  # must be the receiver's address
    amount_duffs: int  # sum of all outputs of that tx to that address
    instant_locked: bool
    block_height: int | None  # None: unknown / mempool -> keep the stored value
    confirmations: int | None  # None: unknown -> keep the stored value


@dataclass(frozen=True, slots=True)
class PaymentChange:
    payment: Payment  # the row after this change
    kind: str  # one of CHANGE_KINDS


@dataclass(frozen=True, slots=True)
class ReceiverUpdate:
    """A receiver's new money state; every field is written as given."""

    received_duffs: int
    status: str
    overpaid: bool
    late: bool
    paid_at: int | None
    settled_at: int | None
    closed_at: int | None
    updated_at: int


_receiver_values = attrgetter(*(f.name for f in fields(Receiver)))
_update_values = attrgetter(*(f.name for f in fields(ReceiverUpdate)))
_UPDATE_AT = tuple([f.name for f in fields(Receiver)].index(f.name) for f in fields(ReceiverUpdate))


def apply_update(receiver: Receiver, update: ReceiverUpdate) -> Receiver:
    """``receiver`` with ``update``'s fields: what ``dataclasses.replace`` gives, built
    positionally (a third of its cost; it runs twice per recorded payment)."""
    values = list(_receiver_values(receiver))
    for at, value in zip(_UPDATE_AT, _update_values(update), strict=True):
        values[at] = value
    return Receiver(*values)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A callback to enqueue; stored with created_at = next_attempt_at = ``now``."""

    event_id: str  # at most 64 characters, unique
    event: str  # at most 64 characters
    payload: str  # JSON text, exactly what will be POSTed


@dataclass(frozen=True, slots=True)
class ReceiverWork:
    """One receiver's share of a batch: what the source showed (``observations``), what
    it has positive evidence against (``dropped_txids``: a conflicting spend) and what
    it no longer shows (``absent_txids``). The domain decides what a drop or an absence
    does to each payment (``accounting.absence``): final money is never un-credited."""

    receiver_id: int
    observations: tuple[PaymentObservation, ...] = ()
    dropped_txids: tuple[str, ...] = ()
    absent_txids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverResult:
    receiver: Receiver  # as stored after the update
    payments: list[Payment]  # oldest first
    changes: list[PaymentChange]  # in the order applied
    events: list[OutboxEvent]  # the rows inserted, in order


@dataclass(frozen=True, slots=True)
class CreateReceiverParams:
    amount: Decimal  # as given, in `currency`
    currency: str  # "DASH" or an ISO 4217 fiat code
    amount_duffs: int | None  # set when currency is DASH
    callback_url: str | None
    description: str | None
    username: str | None
    expires_after: float | None  # seconds; None = the configured default; 0 = never
    idempotency_key: str | None
    redirect_url: str | None = None


@dataclass(frozen=True, slots=True)
class ListReceiversParams:
    status: str | None
    limit: int
    before_id: int | None
