"""The ``Dashpay-Signature`` header: HMAC-SHA256 over the timestamp and the raw body.

Format: ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``. Signing the
timestamp with the body lets a merchant refuse replays of an old, captured request
(``verify_signature``'s ``tolerance``), and the version prefix leaves room for another
scheme without breaking verifiers; a verifier accepts any ``v1`` entry it can match, so
a header may carry several (e.g. while a secret is being rotated). The scheme is the
widely used one of Stripe-style webhooks, so merchants find familiar examples.

Stdlib only: merchants may copy ``verify_signature`` as a reference, and the tests use
it as the independent check of what the sender puts on the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SCHEME = "v1"
# How old a signed timestamp a verifier accepts by default. Five minutes covers clock
# skew and slow networks, and is the common choice of webhook providers.
DEFAULT_TOLERANCE_SECONDS = 300
# A header longer than this is not ours (a few signatures are ~80 characters each).
MAX_HEADER_CHARS = 1024


class SignatureError(ValueError):
    """A ``Dashpay-Signature`` header that cannot be read."""


def compute_signature(secret: str, body: bytes, timestamp: int) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with the UTF-8 secret."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return hmac.digest(secret.encode("utf-8"), message, hashlib.sha256).hex()


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """The value of the ``Dashpay-Signature`` header for ``body`` sent at ``timestamp``."""
    return f"t={int(timestamp)},{SCHEME}={compute_signature(secret, body, timestamp)}"


def parse_signature_header(header: str) -> tuple[int, list[str]]:
    """The timestamp and every ``v1`` signature of a header; SignatureError if it is
    malformed (no timestamp, a non-numeric one, or no ``v1`` entry)."""
    if len(header) > MAX_HEADER_CHARS:
        raise SignatureError(f"the header is over {MAX_HEADER_CHARS} characters")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError(f"{item.strip()!r} is not key=value")
        if key == "t":
            if not value.isdigit():
                raise SignatureError(f"the timestamp {value!r} is not unix seconds")
            timestamp = int(value)
        elif key == SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise SignatureError("the header has no t= timestamp")
    if not signatures:
        raise SignatureError(f"the header has no {SCHEME}= signature")
    return timestamp, signatures


def verify_signature(
    secret: str,
    body: bytes,
    header: str,
    *,
    now: float | None = None,
    tolerance: float | None = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """Whether ``header`` is a valid signature of ``body`` with ``secret``, made no more
    than ``tolerance`` seconds from ``now`` (None: any age). Constant-time comparison;
    a malformed header is simply not valid."""
    try:
        timestamp, signatures = parse_signature_header(header)
    except SignatureError:
        return False
    if tolerance is not None:
        current = time.time() if now is None else now
        if abs(current - timestamp) > tolerance:
            return False
    expected = compute_signature(secret, body, timestamp)
    # compare_digest refuses non-ASCII text; such a candidate cannot match a hex digest.
    return any(c.isascii() and hmac.compare_digest(expected, c) for c in signatures)
