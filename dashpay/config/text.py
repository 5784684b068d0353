"""Values in config error messages: quoted, described by TOML type, passwords hidden.

Every message of the config package goes through these, so a secret or a control
character never reaches a terminal or a log. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any


def quote(text: str, limit: int = 80) -> str:
    """Text in double quotes, escaped, shortened for messages."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in escaped)
    return f'"{escaped}"'


def describe(value: Any, *, secret: bool = False) -> str:
    """A value's TOML type, and the value itself unless it is secret."""
    if isinstance(value, bool):
        kind, shown = "boolean", str(value).lower()
    elif isinstance(value, int):
        kind, shown = "integer", str(value)
    elif isinstance(value, float | Decimal):
        kind, shown = "float", str(value)
    elif isinstance(value, str):
        kind, shown = "string", quote(value)
    elif isinstance(value, list | tuple):
        kind, shown = "array", f"of {len(value)} items"
    elif isinstance(value, Mapping):
        kind, shown = "table", ""
    else:
        kind, shown = "date/time" if hasattr(value, "isoformat") else type(value).__name__, ""
    if secret:
        return f"{kind} (value hidden)"
    return f"{kind} {shown}".rstrip()


def redact_url(url: str) -> str:
    """The URL with the password (between "user:" and the last "@") replaced by ***.

    Uses the last "@" so a password with an unencoded "@", "/" or "?" is hidden too, and
    copes with a mistyped "scheme:/"; hiding a little too much is fine, too little is not.
    """
    at = url.rfind("@")
    if at < 0:
        return url
    separator = url.find("://")
    if separator >= 0:
        start = separator + 3
        user, colon, _ = url[start:at].partition(":")
        return f"{url[:start]}{user}:***{url[at:]}" if colon else url
    colon = url.find(":")
    if colon < 0:
        return url
    return f"{url[: colon + 1]}***{url[at:]}"


def toml_value(value: Any) -> str:
    """A value written as TOML (for hints and docs)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return str(value)


def close_matches(word: str, candidates: Any) -> list[str]:
    """The closest candidate to a typo (difflib is imported only when there is one)."""
    import difflib

    return difflib.get_close_matches(word, list(candidates), n=1)
