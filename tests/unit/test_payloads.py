"""The callback body's encoding: orjson must write exactly what the stdlib would, so
the wire format (and every signature over it) does not depend on the encoder."""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from dashpay.domain.model import Payment, Receiver
from dashpay.domain.payload import event_payload, payment_summary
from dashpay.domain.views import receiver_view
from tests.unit.test_accounting import DUE, NOW, payment, receiver

# The receivers and payments of the accounting tests, with every optional field set.
RECEIVER = receiver(
    status="paid",
    received_duffs=DUE,
    paid_at=NOW,
    fiat_amount="12.50",
    fiat_currency="EUR",
    rate="8.3333",
    rate_provider="coingecko",
    rate_fetched_at=NOW - 1_000,
    callback_url="https://shop.example/dashpay",
    idempotency_key="k-1",
)
PAYMENT = payment("a", DUE, locked=True)


def stdlib(event: str, event_id: str, owner: Receiver, paid_by: Payment | None) -> str:
    """What the body was when it was built with json.dumps (the reference)."""
    body = json.loads(event_payload(event, event_id, NOW, owner, paid_by))
    assert body["receiver"] == receiver_view(owner)
    assert body["payment"] == (payment_summary(paid_by) if paid_by else None)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


# Any text a merchant may put in a receiver (no lone surrogates: they are not text).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(description=TEXT, username=TEXT, currency=TEXT)
def test_the_body_is_byte_for_byte_what_the_stdlib_writes(description, username, currency):
    changed = replace(RECEIVER, description=description, username=username, fiat_currency=currency)
    for paid_by in (PAYMENT, None):
        ours = event_payload("receiver.paid", "evt_1", NOW, changed, paid_by)
        assert ours == stdlib("receiver.paid", "evt_1", changed, paid_by)


def test_control_characters_quotes_and_non_ascii_are_written_as_the_stdlib_writes_them():
    changed = replace(RECEIVER, description='tab\there "quoted" \\ \x00\x1f\x7f é 😀 \u2028')
    ours = event_payload("receiver.paid", "evt_1", NOW, changed, PAYMENT)
    assert ours == stdlib("receiver.paid", "evt_1", changed, PAYMENT)
    assert '"description":"tab\\there \\"quoted\\" \\\\ \\u0000\\u001f\x7f é 😀 \u2028"' in ours
