"""cli/text.py: what the CLI prints from data is shown literally."""

from __future__ import annotations

import io
import json

import pytest

from dashpay.cli.render import console, fields_table, literal
from dashpay.cli.text import help_text, json_safe, say, visible, visible_lines


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("order 42", "order 42"),
        ("a\nb", "a\\nb"),
        ("a\rb\tc", "a\\rb\\tc"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("\x00\x07\x08", "\\x00\\x07\\x08"),
        ("del\x7f", "del\\x7f"),
        ("\x9b31m", "\\x9b31m"),  # the 8-bit CSI
        ("abc\u202edcba", "abc\\u202edcba"),  # a right-to-left override
        ("\u2066x\u2069", "\\u2066x\\u2069"),
        ("lone \udcff", "lone \\udcff"),
        ("Zürich 東京 ✓", "Zürich 東京 ✓"),
        ("[red]PAID[/red]", "[red]PAID[/red]"),  # markup is not visible()'s business
        (42, "42"),
    ],
)
def test_visible_shows_every_control_character_as_an_escape(raw, shown):
    assert visible(raw) == shown


def test_say_prints_one_literal_line():
    out = io.StringIO()
    say("desc \x1b]0;title\x07 end", file=out)
    assert out.getvalue() == "desc \\x1b]0;title\\x07 end\n"


def test_json_safe_keeps_the_json_value_and_escapes_what_a_terminal_obeys():
    data = {"d": "csi \x9b31m del \x7f rlo \u202e esc \x1b nl \n ok é"}
    document = json_safe(json.dumps(data, indent=2, ensure_ascii=False))
    assert json.loads(document) == data
    assert "\n" in document  # the layout stays
    assert not any(ch in document for ch in "\x9b\x7f\u202e\x1b")
    assert "é" in document


def test_help_text_escapes_what_rich_reads_as_a_tag():
    from rich.text import Text

    text = help_text("exit 4 when the [callbacks] rules refuse; [ID]... [/b] [#x] [@y]")
    assert Text.from_markup(text).plain == (
        "exit 4 when the [callbacks] rules refuse; [ID]... [/b] [#x] [@y]"
    )


def _rendered(renderable) -> str:
    out = console()
    with out.capture() as captured:
        out.print(renderable)
    return captured.get()


def test_literal_cells_are_never_markup_and_never_control_characters():
    shown = _rendered(fields_table([("description", "[red]PAID[/red] [bold]x :smile: \x1b[2J")]))
    assert "[red]PAID[/red] [bold]x :smile: \\x1b[2J" in shown
    assert "\x1b" not in shown


def test_the_console_prints_markup_in_plain_strings_as_written():
    assert _rendered("[callbacks] default_url [bold]x") == "[callbacks] default_url [bold]x\n"
    assert literal(None).plain == ""


def test_visible_lines_keeps_the_lines_and_escapes_the_rest():
    assert visible_lines("one \x1b[2J\ntwo\r\t") == "one \\x1b[2J\ntwo\\r\\t"
