"""`dashpay price [CUR ...] [--json]`: the DASH price of fiat currencies as the daemon
sees it (each quote, its provider and its age). A thin layer over ``price.get``.

Kept apart from ``dashpay/cli.py`` (which registers the command), so the helpers of that
module are imported inside the function: importing them at the top would be circular.
Like the rest of the CLI it imports neither trio nor httpx.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from dashpay.api import methods
from dashpay.domain.errors import EXIT_USAGE, exit_code_for

_CODE = re.compile(r"[A-Za-z]{3}")
# The daemon answers for at most this many currencies per call (valuation.py).
MAX_CURRENCIES = 32
# A price.get may fetch from every provider in turn for a currency with no cached
# quote: three providers at the default 5 s timeout, plus room.
PRICE_TIMEOUT = 65.0


def _age(seconds: Any) -> str:
    if not isinstance(seconds, int) or seconds < 0:
        return "?"
    from dashpay.config.durations import format_duration

    return format_duration(seconds)


def price_command(ctx: Any, currencies: list[str] | None, as_json: bool) -> None:
    """Show each currency's DASH price, provider and age (default: the currencies the
    daemon keeps fresh). Exits like other commands when a price is unavailable (5) or a
    currency is unknown to every provider (2); --json prints the data either way."""
    from dashpay.cli.app import _console, call, fail, print_json

    codes = [code.strip().upper() for code in currencies or []]
    for code in codes:
        if not _CODE.fullmatch(code) or code == "DASH":
            fail(
                f"{code!r} is not a fiat currency code",
                EXIT_USAGE,
                "Give 3-letter ISO 4217 codes such as USD or EUR.",
            )
    if len(codes) > MAX_CURRENCIES:
        fail(f"at most {MAX_CURRENCIES} currencies at once, got {len(codes)}", EXIT_USAGE)
    params = {"currencies": codes} if codes else {}
    result = call(ctx, methods.PRICE_GET, params, timeout=PRICE_TIMEOUT)
    quotes = result.get("quotes") or []
    errors = [entry for entry in quotes if entry.get("error")]
    if as_json:
        print_json(result)
    else:
        _render(_console(), result, quotes)
    if errors:
        import typer

        raise typer.Exit(exit_code_for(errors[0]["error"].get("kind", "")))


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
        table.add_row(
            entry["currency"],
            price,
            shown.get("provider", "-"),
            age,
            shown.get("fetched_at") or "-",
        )
    console.print(table)
    strategy = result.get("strategy")
    providers = ", ".join(result.get("providers") or [])
    console.print(
        f"strategy {strategy} over {providers}; quotes are used for "
        f"{_age(int(result.get('max_age_seconds') or 0))}"
    )
    for entry in quotes:
        error = entry.get("error")
        if error:
            message = f"{entry['currency']}: {error.get('message')} [{error.get('kind')}]"
            print(f"dashpay: error: {message}", file=sys.stderr)
