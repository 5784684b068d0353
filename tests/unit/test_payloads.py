"""The callback body's encoding: orjson must write exactly what the stdlib would, so
the wire format (and every signature over it) does not depend on the encoder."""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from dashpay.repository.base import Payment, Receiver
from dashpay.services.payloads import event_payload, payment_summary
from dashpay.services.views import receiver_view

NOW = 1_800_000_000_123
RECEIVER = Receiver(
    receiver_id=42,
    wallet_id="wallet",
    chain=0,
    hd_index=7,
    address="yXkQ1nR7ZgkQbXW9xqJpQFq8ZT1mEXAMPLE",
    amount_duffs=150_000_000,
    received_duffs=150_000_000,
    status="paid",
    overpaid=False,
    late=False,
    created_at=NOW - 60_000,
    updated_at=NOW,
    expires_at=NOW + 3_600_000,
    paid_at=NOW,
    settled_at=None,
    closed_at=None,
    fiat_amount="12.50",
    fiat_currency="EUR",
    rate="8.3333",
    rate_provider="coingecko",
    rate_fetched_at=NOW - 1_000,
    callback_url="https://shop.example/dashpay",
    description="order 1",
    username="alice",
    idempotency_key="k-1",
)
PAYMENT = Payment(
    payment_id=9,
    receiver_id=42,
    txid="ab" * 32,
    address=RECEIVER.address,
    amount_duffs=150_000_000,
    instant_locked=True,
    block_height=None,
    confirmations=0,
    dropped=False,
    first_seen_at=NOW,
    updated_at=NOW,
)


def stdlib(event: str, event_id: str, receiver: Receiver, payment: Payment | None) -> str:
    """What the body was when it was built with json.dumps (the reference)."""
    body = json.loads(event_payload(event, event_id, NOW, receiver, payment))
    assert body["receiver"] == receiver_view(receiver)
    assert body["payment"] == (payment_summary(payment) if payment else None)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


# Any text a merchant may put in a receiver (no lone surrogates: they are not text).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(description=TEXT, username=TEXT, currency=TEXT)
def test_the_body_is_byte_for_byte_what_the_stdlib_writes(description, username, currency):
    receiver = replace(RECEIVER, description=description, username=username, fiat_currency=currency)
    for payment in (PAYMENT, None):
        ours = event_payload("receiver.paid", "evt_1", NOW, receiver, payment)
        assert ours == stdlib("receiver.paid", "evt_1", receiver, payment)


def test_control_characters_quotes_and_non_ascii_are_written_as_the_stdlib_writes_them():
    receiver = replace(RECEIVER, description='tab\there "quoted" \\ \x00\x1f\x7f é 😀 \u2028')
    ours = event_payload("receiver.paid", "evt_1", NOW, receiver, PAYMENT)
    assert ours == stdlib("receiver.paid", "evt_1", receiver, PAYMENT)
    assert '"description":"tab\\there \\"quoted\\" \\\\ \\u0000\\u001f\x7f é 😀 \u2028"' in ours
