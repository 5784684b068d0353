"""`dashpay price [CUR ...] [--json]`: the DASH price of fiat currencies as the daemon
sees it (each quote, its provider and its age). A thin layer over ``price.get``.

The `price` command itself is generated from the command table (cli/commands.py);
this module holds its output and its command-line checks. Like the rest of the CLI it
imports neither trio nor httpx.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from dashpay.cli.render import add_row, console, renders
from dashpay.cli.text import say
from dashpay.domain.errors import EXIT_USAGE, exit_code_for
from dashpay.domain.limits import MAX_REQUEST_CURRENCIES

_CODE = re.compile(r"[A-Za-z]{3}")


def _age(seconds: Any) -> str:
    if not isinstance(seconds, int) or seconds < 0:
        return "?"
    from dashpay.config.durations import format_duration

    return format_duration(seconds)


def check_codes(params: dict[str, Any]) -> dict[str, Any]:
    """The currency codes upper-cased, or exit 2 naming the one that is not a code."""
    from dashpay.cli.context import fail

    codes = [code.strip().upper() for code in params.get("currencies") or []]
    for code in codes:
        if not _CODE.fullmatch(code) or code == "DASH":
            fail(
                f"{code!r} is not a fiat currency code",
                EXIT_USAGE,
                "Give 3-letter ISO 4217 codes such as USD or EUR.",
            )
    if len(codes) > MAX_REQUEST_CURRENCIES:
        fail(f"at most {MAX_REQUEST_CURRENCIES} currencies at once, got {len(codes)}", EXIT_USAGE)
    return {"currencies": codes} if codes else {}


def exit_code(result: dict[str, Any]) -> int | None:
    """A price that is unavailable exits 5, a currency no provider knows 2."""
    errors = [entry for entry in result.get("quotes") or [] if entry.get("error")]
    return exit_code_for(errors[0]["error"].get("kind", "")) if errors else None


@renders("price.get")
def render_prices(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    _render(console(), result, result.get("quotes") or [])
    return None


def price_command(ctx: Any, currencies: list[str] | None, as_json: bool) -> None:
    """Show each currency's DASH price, provider and age (default: the currencies the
    daemon keeps fresh). Exits like other commands when a price is unavailable (5) or a
    currency is unknown to every provider (2); --json prints the data either way."""
    import typer

    from dashpay.api.commands import COMMANDS
    from dashpay.cli.context import call
    from dashpay.cli.text import print_json

    command = COMMANDS["price.get"]
    params = check_codes({"currencies": currencies or []})
    result = call(ctx, command.name, params, timeout=command.timeout)
    print_json(result) if as_json else render_prices(result, {})
    code = exit_code(result)
    if code:
        raise typer.Exit(code)


def _render(console: Any, result: dict[str, Any], quotes: list[dict[str, Any]]) -> None:
    from rich.table import Table

    if not quotes:
        console.print("no currencies are configured or cached; ask for one, e.g. dashpay price USD")
        return
    table = Table(title_justify="left")
    for column in ("currency", "price of 1 DASH", "provider", "age", "fetched at"):
        table.add_column(column, no_wrap=True)
    for entry in quotes:
        shown = entry if not entry.get("error") else (entry.get("cached") or {})
        price = f"{shown['price']} {entry['currency']}" if shown.get("price") else "-"
        age = _age(shown.get("age_seconds")) if shown else "-"
        if entry.get("error") and shown:
            age += " (too old)"
        add_row(
            table,
            entry["currency"],
            price,
            shown.get("provider", "-"),
            age,
            shown.get("fetched_at") or "-",
        )
    console.print(table)
    strategy = result.get("strategy")
    providers = ", ".join(result.get("providers") or [])
    say(
        f"strategy {strategy} over {providers}; quotes are used for "
        f"{_age(int(result.get('max_age_seconds') or 0))}"
    )
    for entry in quotes:
        error = entry.get("error")
        if error:
            message = f"{entry['currency']}: {error.get('message')} [{error.get('kind')}]"
            say(f"dashpay: error: {message}", file=sys.stderr)
