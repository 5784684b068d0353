"""The JSON shapes of receivers and payments: what `receiver show --json` prints, what
the control socket returns and what callbacks carry. One definition, used everywhere."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from dashpay.domain.model import Payment, Receiver
from dashpay.domain.money import format_dash

# Timestamps recently formatted, remembered: the events of one committed batch share
# its time (the payload's created_at and the updated_at, paid_at, closed_at and
# first_seen_at it set), so most of a payload's ~10 timestamps were just formatted.
ISO_TIME_CACHE = 4096


@lru_cache(maxsize=ISO_TIME_CACHE)
def iso_time(ms: int | None) -> str | None:
    """Unix milliseconds as ISO 8601 UTC with millisecond precision, e.g.
    2026-11-26T07:14:11.123Z."""
    if ms is None:
        return None
    # Whole seconds (floor, as ms % 1000 is) and the fields formatted directly: a
    # quarter cheaper than strftime, and it runs ~10 times per callback payload.
    m = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T"
        f"{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{ms % 1000:03d}Z"
    )


def payment_uri(address: str, amount_duffs: int) -> str:
    """BIP21-style URI that Dash wallets understand: dash:ADDRESS?amount=1.5"""
    return f"dash:{address}?amount={format_dash(amount_duffs)}"


def checkout_url(public_url: str | None, public_token: str | None) -> str | None:
    """A receiver's checkout page: ``<public_url>/pay/<public_token>`` (the HTTP
    server's route), or None without a public URL or a token."""
    if public_url is None or public_token is None:
        return None
    return f"{public_url}/pay/{public_token}"


def receiver_view(receiver: Receiver, payments: list[Payment] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "receiver_id": receiver.receiver_id,
        "address": receiver.address,
        "hd_index": receiver.hd_index,
        "chain": receiver.chain,
        "status": receiver.status,
        "amount_duffs": receiver.amount_duffs,
        "amount_dash": format_dash(receiver.amount_duffs),
        "received_duffs": receiver.received_duffs,
        "received_dash": format_dash(receiver.received_duffs),
        "overpaid": receiver.overpaid,
        "late": receiver.late,
        "fiat_amount": receiver.fiat_amount,
        "fiat_currency": receiver.fiat_currency,
        "rate": receiver.rate,
        "rate_provider": receiver.rate_provider,
        "rate_fetched_at": iso_time(receiver.rate_fetched_at),
        "callback_url": receiver.callback_url,
        "description": receiver.description,
        "username": receiver.username,
        "idempotency_key": receiver.idempotency_key,
        "created_at": iso_time(receiver.created_at),
        "expires_at": iso_time(receiver.expires_at),
        "paid_at": iso_time(receiver.paid_at),
        "settled_at": iso_time(receiver.settled_at),
        "closed_at": iso_time(receiver.closed_at),
        "updated_at": iso_time(receiver.updated_at),
        "payment_uri": payment_uri(receiver.address, receiver.amount_duffs),
        # The checkout page's id (its address is checkout_url in command answers:
        # <[http] public_url>/pay/<public_token>) and where that page sends the customer.
        "public_token": receiver.public_token,
        "redirect_url": receiver.redirect_url,
    }
    if payments is not None:
        view["payments"] = [payment_view(p) for p in payments]
    return view


def payment_view(payment: Payment) -> dict[str, Any]:
    return {
        "txid": payment.txid,
        "address": payment.address,
        "amount_duffs": payment.amount_duffs,
        "amount_dash": format_dash(payment.amount_duffs),
        "instant_locked": payment.instant_locked,
        "confirmations": payment.confirmations,
        "block_height": payment.block_height,
        "dropped": payment.dropped,
        # Counted, but the chain source stopped showing it (see the README's "When a
        # payment goes missing"); missing_since says since when.
        "missing_from_source": payment.missing_since is not None and not payment.dropped,
        "missing_since": iso_time(payment.missing_since),
        "first_seen_at": iso_time(payment.first_seen_at),
        "updated_at": iso_time(payment.updated_at),
    }
