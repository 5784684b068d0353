"""The checkout page's texts: one JSON file per language in ``messages/`` (package
data), English first and the fallback. A shop translates the page by adding a file
with the same keys (``tests/unit/test_checkout_page.py`` checks every language has
every key with the same ``{placeholders}``).

The language is negotiated from the browser's ``Accept-Language`` (RFC 9110 §12.5.4):
the available language with the highest weight wins, English when none matches.
"""

from __future__ import annotations

import json
import re
import string
from functools import cache
from importlib import resources
from typing import Any

FALLBACK = "en"
# Accept-Language is outside input: only its first bytes and entries are looked at
# (browsers send 2-10 entries in well under 200 bytes).
MAX_ACCEPT_LANGUAGE_CHARS = 1024
MAX_ACCEPT_LANGUAGE_ENTRIES = 32
_ENTRY = re.compile(
    r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]{1,5}))?\s*$"
)
_PLACEHOLDER = string.Formatter()
# How the language writes a number: its decimal mark and its thousands separator.
DECIMAL_MARK = "number.decimal"
GROUP_MARK = "number.group"
_CANONICAL = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")


@cache
def catalogues() -> dict[str, dict[str, str]]:
    """Every shipped language's messages, by language code (the file's name)."""
    folder = resources.files("dashpay.api.checkout") / "messages"
    found: dict[str, dict[str, str]] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            found[entry.name.removesuffix(".json")] = json.loads(entry.read_text("utf-8"))
    return found


def languages() -> tuple[str, ...]:
    return tuple(catalogues())


def messages(language: str) -> dict[str, str]:
    """The messages of ``language``, English where it has no text."""
    table = catalogues()
    return {**table[FALLBACK], **table.get(language, {})}


def placeholders(text: str) -> frozenset[str]:
    return frozenset(name for _, name, _, _ in _PLACEHOLDER.parse(text) if name)


def fill(template: str, values: dict[str, Any]) -> str:
    """``template`` with its ``{name}`` placeholders replaced (plain text, not HTML:
    the caller escapes the result). A name without a value stays as it is."""
    return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m[1], m[0])), template)


def negotiate(accept_language: str | None) -> str:
    """The shipped language the browser prefers most, else English. Entries that do
    not parse are skipped; "de-CH" matches "de"; q=0 means "not this one"."""
    if not accept_language:
        return FALLBACK
    available = set(languages())
    best, best_q = FALLBACK, 0.0
    entries = accept_language[:MAX_ACCEPT_LANGUAGE_CHARS].split(",")
    for entry in entries[:MAX_ACCEPT_LANGUAGE_ENTRIES]:
        match = _ENTRY.match(entry)
        if match is None:
            continue
        try:
            q = 1.0 if match[2] is None else float(match[2])
        except ValueError:
            continue
        if not 0 < q <= 1:
            continue
        tag = match[1].lower()
        primary = FALLBACK if tag == "*" else tag.split("-")[0]
        # Equal weights keep the order the browser listed them in.
        if primary in available and q > best_q:
            best, best_q = primary, q
    return best


def local_number(canonical: str, texts: dict[str, str]) -> str:
    """A canonical decimal ("1234.5": how ``format_dash`` and fiat amounts are written,
    and what BIP21 and the copy button keep) as the language writes it, with its
    decimal mark and thousands grouping ("1.234,5" in German). Text to text, never a
    float. ValueError for text that is not a canonical decimal."""
    match = _CANONICAL.fullmatch(canonical)
    if match is None:
        raise ValueError(f"not a canonical decimal: {canonical!r}")
    sign, whole, fraction = match.groups()
    head = len(whole) % 3 or 3
    groups = [whole[:head]] + [whole[i : i + 3] for i in range(head, len(whole), 3)]
    text = sign + texts[GROUP_MARK].join(groups)
    return text if fraction is None else text + texts[DECIMAL_MARK] + fraction
