"""API keys: the scopes a key may carry, the key's format, its hash, and the key as a
value. No I/O (the random bytes of a new key come from a function the caller may
replace); stdlib only, so the CLI can import it for nothing.

A key is ``dp_`` followed by the unpadded base64url text of 32 random bytes (43
characters), 46 characters in all, e.g. ``dp_q3T0...``: the ``dp_`` makes a leaked key
recognisable to a person and to secret scanners. Only the SHA-256 of the key's text is
stored (64 hex digits), never the key: a copy of the database does not let anyone call
the API. 256 random bits make a key that cannot be guessed, so a plain hash (no salt,
no slow KDF) is enough and costs ~1 µs per request. The key's first ``PREFIX_CHARS``
characters are stored too, to tell keys apart in ``apikey list``; they leave 208
unknown bits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dashpay.domain.errors import InvalidParams
from dashpay.domain.views import iso_time

# Scopes: who may call a command (the HTTP API's keys carry them; the Unix socket's file
# permissions grant all of them). A scope grants exactly its commands: ``admin`` does not
# imply the others, so a key is always exactly as strong as its list says.
RECEIVERS_READ = "receivers:read"
RECEIVERS_WRITE = "receivers:write"
CALLBACKS_READ = "callbacks:read"
CALLBACKS_WRITE = "callbacks:write"
ADMIN = "admin"
SANDBOX = "sandbox"  # only in `dashpay serve --sandbox`
SCOPES = (RECEIVERS_READ, RECEIVERS_WRITE, CALLBACKS_READ, CALLBACKS_WRITE, ADMIN, SANDBOX)

TOKEN_PREFIX = "dp_"
TOKEN_BYTES = 32
# base64url of 32 bytes without its "=" padding.
_TOKEN_TEXT = re.compile(r"dp_[A-Za-z0-9_-]{43}")
TOKEN_CHARS = len(TOKEN_PREFIX) + 43
# What `apikey list` shows of a key: "dp_" and 8 characters (48 bits, enough to tell a
# deployment's keys apart).
PREFIX_CHARS = len(TOKEN_PREFIX) + 8
# A key's label: a name for people ("shop1", "backend on host b"); api_keys.label is
# VARCHAR(100) in both backends.
MAX_LABEL_CHARS = 100
# Scopes one key may carry: every scope once.
MAX_SCOPES = len(SCOPES)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One API key as stored, without its secret. Times are epoch milliseconds;
    ``last_used_at`` is approximate (written at most once a minute per key)."""

    id: int
    label: str
    scopes: frozenset[str]
    prefix: str
    created_at: int
    revoked_at: int | None = None
    last_used_at: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, scope: str) -> bool:
        """Whether this key may call a command that needs ``scope``."""
        return self.revoked_at is None and scope in self.scopes


def new_token(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A fresh key: ``dp_`` + base64url (no padding) of 32 random bytes."""
    raw = random_bytes(TOKEN_BYTES)
    if len(raw) != TOKEN_BYTES:
        raise ValueError(f"expected {TOKEN_BYTES} random bytes, got {len(raw)}")
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def is_token(text: object) -> bool:
    """Whether ``text`` has the shape of a key (says nothing about whether it exists)."""
    return isinstance(text, str) and len(text) == TOKEN_CHARS and bool(_TOKEN_TEXT.fullmatch(text))


def token_hash(token: str) -> str:
    """What is stored of a key: SHA-256 of its text, as 64 lower-case hex digits."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def same_hash(stored: str, presented: str) -> bool:
    """Compare two key hashes in constant time (``hmac.compare_digest``), so the time a
    refusal takes says nothing about how much of a hash matched."""
    return hmac.compare_digest(stored.encode("ascii"), presented.encode("ascii"))


def token_prefix(token: str) -> str:
    return token[:PREFIX_CHARS]


def check_label(value: object) -> str:
    """A key's label: 1 to ``MAX_LABEL_CHARS`` characters of text, no control
    characters, not only spaces."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidParams("label is required: a name for the key, e.g. --label shop1")
    if len(value) > MAX_LABEL_CHARS:
        raise InvalidParams(
            f"label is {len(value)} characters long; at most {MAX_LABEL_CHARS} allowed"
        )
    if any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in value):
        raise InvalidParams("label contains control characters; use plain text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParams("label is not valid text (a lone surrogate)") from None
    return value


def check_scopes(value: object) -> frozenset[str]:
    """The scopes of a new key: a non-empty list of names from ``SCOPES`` (a repeated
    name counts once). Whether ``sandbox`` may be granted is the daemon's to say."""
    valid = ", ".join(SCOPES)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple | frozenset | set) or not value:
        raise InvalidParams(
            f"give at least one scope (e.g. --scope {RECEIVERS_WRITE}); valid scopes: {valid}"
        )
    if len(value) > 4 * MAX_SCOPES:
        raise InvalidParams(f"at most {MAX_SCOPES} scopes; valid scopes: {valid}")
    unknown = [s for s in value if not isinstance(s, str) or s not in SCOPES]
    if unknown:
        shown = ", ".join(repr(s)[:40] for s in unknown[:3])
        raise InvalidParams(f"unknown scope {shown}; valid scopes: {valid}")
    return frozenset(value)


def scopes_text(scopes: Iterable[str]) -> str:
    """Scopes as stored: sorted, separated by single spaces."""
    return " ".join(sorted(scopes))


def scopes_from_text(text: str) -> frozenset[str]:
    return frozenset(text.split())


def api_key_view(key: ApiKey) -> dict[str, object]:
    """The JSON shape of a key (``apikey list``/``revoke``): never its secret or hash."""
    return {
        "id": key.id,
        "label": key.label,
        "scopes": sorted(key.scopes),
        "prefix": key.prefix,
        "created_at": iso_time(key.created_at),
        "revoked_at": iso_time(key.revoked_at),
        "last_used_at": iso_time(key.last_used_at),
    }
