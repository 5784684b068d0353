"""The checkout page's live updates as Server-Sent Events (HTML Living Standard §9.2):
one ``state`` event per change of a receiver, carrying exactly what the page's script
applies (``state.state_values``, the amounts as the page's language writes them and
the QR code of what is still due). Pure: the HTTP layer writes these bytes to each
watcher of the receiver (one frame per change and language).
"""

from __future__ import annotations

import json
from typing import Any

from dashpay.api.checkout.catalogue import local_number
from dashpay.api.checkout.qr import qr_data_uri
from dashpay.api.checkout.state import CheckoutState, state_values

EVENT = "state"
# How long a browser waits before reconnecting after the stream ends or breaks (the
# field is in ms). The page's state is sent again first on every (re)connection.
RETRY_MS = 3000
# A comment line (ignored by EventSource) sent when nothing else was: keeps proxies
# and NAT tables from closing an idle stream (nginx's proxy_read_timeout is 60 s).
KEEPALIVE = b": keep-alive\n\n"
KEEPALIVE_SECONDS = 20


# The amounts shown as the language writes them (``<name>_shown``), beside the canonical
# ``<name>_dash`` that the BIP21 URI and the copy button keep (wallets parse a dot).
SHOWN_AMOUNTS = ("amount", "received", "due", "overpaid")


def page_values(state: CheckoutState, texts: dict[str, str]) -> dict[str, Any]:
    """The state the page's script holds, in the language of ``texts``: the values,
    the amounts as shown, the address and the QR code of the current payment request
    (None once nothing is due)."""
    values = state_values(state)
    for name in SHOWN_AMOUNTS:
        values[f"{name}_shown"] = local_number(values[f"{name}_dash"], texts)
    values["fiat_shown"] = None
    if state.fiat_amount is not None and state.fiat_currency is not None:
        try:
            fiat = local_number(state.fiat_amount, texts)
        except ValueError:  # not written by the price service: shown as stored
            fiat = state.fiat_amount
        values["fiat_shown"] = f"{fiat} {state.fiat_currency}"
    values["address"] = state.address
    values["qr"] = qr_data_uri(state.payment_uri) if state.paying else None
    return values


def sse_frame(state: CheckoutState, texts: dict[str, str], *, retry: bool = False) -> bytes:
    """One ``state`` event of ``state`` (with ``retry``: also the reconnection delay,
    for the first frame of a stream). JSON on one ``data:`` line: json.dumps escapes
    every line break, so the frame cannot be split or forged by a value."""
    data = json.dumps(page_values(state, texts), separators=(",", ":"), ensure_ascii=True)
    head = f"retry: {RETRY_MS}\n" if retry else ""
    return f"{head}event: {EVENT}\ndata: {data}\n\n".encode("ascii")
