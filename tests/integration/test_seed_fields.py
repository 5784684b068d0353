"""The original processor's createReceiver fields through a real daemon's
receiver.create (control socket, both backends): the params api/seed.py makes are
accepted as they are, and the answer maps back to the original's fields."""

from __future__ import annotations

import json
import time
from decimal import Decimal

from dashpay.api.seed import RECEIVER_FIELDS, create_params, receiver_fields, seed_json
from dashpay.net.control_client import ControlClient
from dashpay.wire.jsonrpc import RemoteError


def create_when_available(client: ControlClient, params: dict) -> dict:
    """receiver.create, once the starting daemon's receiver service is up (the fixture
    waits only for the daemon to answer)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return client.call("receiver.create", params)
        except RemoteError as exc:
            if "not available yet" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def test_a_seed_form_creates_a_receiver_and_reads_back_in_the_originals_fields(daemon):
    form = [
        ("currency", "DASH"),
        ("amount", "0.25"),
        ("username", "alice"),
        ("description", 'Order "1001"'),
        ("callbackUrl", "https://shop.example/dash/callback"),
        ("api_key", "the-old-key"),
    ]
    params = create_params(form, idempotency_key="order-1001")
    with ControlClient(daemon.socket) as client:
        view = create_when_available(client, params)
        again = client.call("receiver.create", params)  # the same key: the same receiver
        shown = client.call("receiver.get", {"receiver_id": view["receiver_id"]})
    assert again["receiver_id"] == view["receiver_id"]
    assert (shown["username"], shown["description"]) == ("alice", 'Order "1001"')
    assert shown["callback_url"] == "https://shop.example/dash/callback"

    body = json.loads(seed_json(receiver_fields(view)), parse_float=Decimal)
    assert tuple(body) == RECEIVER_FIELDS
    assert body["receiver_id"] == str(view["receiver_id"])
    assert body["dash_payment_address"] == view["address"]
    assert body["amount_duffs"] == "25000000"
    assert (body["amount_fiat"], body["type_fiat"], body["base_fiat"]) == ("0.25", "DASH", 1)
    assert body["created_date"] == view["created_at"]
    assert body["username"] == "alice"
