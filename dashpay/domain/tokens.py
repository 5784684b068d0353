"""A receiver's public token: the unguessable id in its checkout page's address
(``/pay/<token>``). The integer receiver id is sequential, so anyone could walk it;
the token is 128 random bits, as hard to guess as a UUID4 is to collide, written in
base64url without padding (22 characters of ``A-Z a-z 0-9 - _``: URL-safe, no
escaping anywhere). Made once when the receiver is created, never changed.
"""

from __future__ import annotations

import re
import secrets

PUBLIC_TOKEN_BYTES = 16  # 128 bits
PUBLIC_TOKEN_CHARS = 22  # base64url of 16 bytes, without the "==" padding
_PUBLIC_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{PUBLIC_TOKEN_CHARS}}}")


def new_public_token() -> str:
    return secrets.token_urlsafe(PUBLIC_TOKEN_BYTES)


def is_public_token(value: object) -> bool:
    """Whether ``value`` has a public token's shape (checked before any lookup, so a
    hostile path never reaches the database)."""
    return isinstance(value, str) and _PUBLIC_TOKEN.fullmatch(value) is not None
