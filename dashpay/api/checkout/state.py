"""What the checkout page shows for a receiver: its *view* (one of ``VIEWS``, each with
a title and a text in the catalogue) and the few values the page needs. Pure: the
renderer (``page.py``) and the live updates (``events.py``) are both built from
``checkout_state``, so a reload and an event always agree.

Only what the customer needs is here: amounts, the address, the description, the
expiry, whether InstantSend settled it. Never the callback URL, the receiver id or the
username.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dashpay.domain.model import Payment, Receiver
from dashpay.domain.money import format_dash
from dashpay.domain.status import (
    CANCELLED,
    EXPIRED,
    FINAL_STATUSES,
    PAID,
    PARTIAL,
    PENDING,
    SETTLED,
)
from dashpay.domain.views import payment_uri

WAITING = "waiting"
PARTLY_PAID = "partly_paid"
CONFIRMING = "confirming"
SETTLED_VIEW = "settled"
SETTLED_INSTANT = "settled_instant"
EXPIRED_VIEW = "expired"
PAID_LATE = "paid_late"
OVERPAID = "overpaid"
CANCELLED_VIEW = "cancelled"
VIEWS = (
    WAITING,
    PARTLY_PAID,
    CONFIRMING,
    SETTLED_VIEW,
    SETTLED_INSTANT,
    EXPIRED_VIEW,
    PAID_LATE,
    OVERPAID,
    CANCELLED_VIEW,
)
# Views in which the customer still has to pay: the QR code, the address, the amount
# to send, the copy buttons and the countdown show.
PAYING_VIEWS = frozenset({WAITING, PARTLY_PAID})
# Views after which the customer is done and may go back to the shop.
DONE_VIEWS = frozenset(
    {CONFIRMING, SETTLED_VIEW, SETTLED_INSTANT, PAID_LATE, OVERPAID, EXPIRED_VIEW, CANCELLED_VIEW}
)
# Views the page takes the customer back to the shop from by itself (redirect_url).
REDIRECT_VIEWS = frozenset({SETTLED_VIEW, SETTLED_INSTANT})


@dataclass(frozen=True, slots=True)
class CheckoutState:
    view: str  # one of VIEWS
    status: str  # the receiver's status
    final: bool  # the receiver's status is final: no change is expected any more
    address: str
    amount_duffs: int
    received_duffs: int
    due_duffs: int  # still to send (0 once paid)
    overpaid_duffs: int  # received beyond the amount
    expires_at: int | None  # epoch ms
    now: int  # epoch ms, the server's clock when this was made (the page's countdown)
    fiat_amount: str | None
    fiat_currency: str | None
    description: str | None
    redirect_url: str | None
    token: str

    @property
    def payment_uri(self) -> str:
        """BIP21 ``dash:`` URI of what is still due (the whole amount before any
        payment): exact decimal DASH from duffs, never a float."""
        return payment_uri(self.address, self.due_duffs or self.amount_duffs)

    @property
    def paying(self) -> bool:
        return self.view in PAYING_VIEWS


def view_of(receiver: Receiver, payments: Sequence[Payment] = ()) -> str:
    """The view of a receiver: its status, refined by its flags and payments."""
    status = receiver.status
    if status == CANCELLED:
        return CANCELLED_VIEW
    if status == EXPIRED:
        return EXPIRED_VIEW
    if status in (PAID, SETTLED):
        if receiver.late:
            return PAID_LATE
        if receiver.overpaid:
            return OVERPAID
        if status == PAID:
            return CONFIRMING
        counted = [p for p in payments if not p.dropped]
        if counted and all(p.instant_locked for p in counted):
            return SETTLED_INSTANT
        return SETTLED_VIEW
    if status == PARTIAL:
        return PARTLY_PAID
    if status == PENDING:
        return WAITING
    raise ValueError(f"unknown receiver status {status!r}")


def checkout_state(receiver: Receiver, payments: Sequence[Payment], now: int) -> CheckoutState:
    """The page's state of ``receiver`` (with its ``payments``) at ``now`` (epoch ms)."""
    if receiver.public_token is None:
        raise ValueError("a receiver made before public tokens has no checkout page")
    received = receiver.received_duffs
    return CheckoutState(
        view=view_of(receiver, payments),
        status=receiver.status,
        final=receiver.status in FINAL_STATUSES,
        address=receiver.address,
        amount_duffs=receiver.amount_duffs,
        received_duffs=received,
        due_duffs=max(receiver.amount_duffs - received, 0),
        overpaid_duffs=max(received - receiver.amount_duffs, 0),
        expires_at=receiver.expires_at,
        now=now,
        fiat_amount=receiver.fiat_amount,
        fiat_currency=receiver.fiat_currency,
        description=receiver.description,
        redirect_url=receiver.redirect_url,
        token=receiver.public_token,
    )


def state_values(state: CheckoutState) -> dict[str, Any]:
    """The values the page's texts and its script use: the same keys in the page's
    data block, in every live event and in the catalogue's ``{placeholders}``."""
    return {
        "view": state.view,
        "final": state.final,
        "amount_dash": format_dash(state.amount_duffs),
        "received_dash": format_dash(state.received_duffs),
        "due_dash": format_dash(state.due_duffs),
        "overpaid_dash": format_dash(state.overpaid_duffs),
        "uri": state.payment_uri,
        "expires_at": state.expires_at,
        "now": state.now,
    }
