"""Text from data, shown literally. Stdlib only (every CLI invocation imports it).

What the CLI prints from data (a description, a URL, a daemon's error message, a
provider's name) may hold anything its sender put there. Two things must never happen:

- a control character or a terminal escape sequence reaching the terminal (ESC, the
  8-bit CSI U+009B, a carriage return that overwrites the line, a bidi override that
  reorders it): ``visible`` shows each as an escape, e.g. ``\\x1b``, ``\\n``, ``\\u202e``;
- rich console markup in data being obeyed (``[red]PAID[/red]`` printed red, or a
  ``[callbacks]`` swallowed): the CLI's console has markup off (``cli/render.py``), and
  help texts from the command table go through ``help_text``.
"""

from __future__ import annotations

import json
import re
import sys
from typing import TextIO

# C0 controls (tab and newline too: they break a table's columns and lines), DEL, C1
# controls (U+009B is CSI for a terminal that reads 8-bit controls), the bidi
# embeddings, overrides and isolates (they reorder what follows), and lone surrogates
# (not text: printing one would fail).
_BEYOND_C0 = "\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(f"[\x00-\x1f{_BEYOND_C0}]")
_UNSAFE_IN_JSON = re.compile(f"[{_BEYOND_C0}]")  # the encoder escapes C0 itself
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(value: object) -> str:
    """``str(value)`` with every control character shown as an escape."""
    return _UNSAFE.sub(_escape, str(value))


def visible_lines(text: str) -> str:
    """``visible`` for each line of a text that has several on purpose (an error message
    listing several problems): its newlines stay, every other control is escaped."""
    return "\n".join(visible(line) for line in text.split("\n"))


def say(text: object, *, file: TextIO | None = None) -> None:
    """Print one line that may hold data, literally (stdout unless ``file``)."""
    print(visible(text), file=sys.stdout if file is None else file)


def json_safe(document: str) -> str:
    """A JSON document (``json.dumps(..., ensure_ascii=False)``) with the characters a
    terminal would obey and that encoder leaves raw (DEL, C1, bidi, lone surrogates)
    written as ``\\uXXXX`` escapes: the same JSON value, safe on a terminal (they can
    only occur inside strings)."""
    return _UNSAFE_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", document)


def print_json(data: object) -> None:
    """``data`` as indented JSON on stdout (``--json``), safe on a terminal."""
    print(json_safe(json.dumps(data, indent=2, ensure_ascii=False, default=str)))


# What rich's help rendering reads as the start of a tag: `[` then a lower-case
# letter, `#`, `/` or `@` ("[callbacks]", "[/b]"); an upper-case `[ID]` is left alone.
_TAG_START = re.compile(r"\[(?=[a-z#/@])")


def help_text(text: str) -> str:
    """A help text from the command table as Typer's rich help must get it: every
    `[` that would open a markup tag escaped, so "[callbacks]" is shown as written."""
    return _TAG_START.sub(r"\\[", text)
