"""How the CLI shows each command's answer (human output; ``--json`` prints the answer
as it is). One function per command of the table, by its method name: it gets the
answer and the command's CLI-only options, and returns an exit code or None (0)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from dashpay.cli.text import say, visible
from dashpay.domain.status import OUTBOX_PENDING

Renderer = Callable[[dict[str, Any], dict[str, Any]], int | None]
RENDERERS: dict[str, Renderer] = {}


def renders(method: str) -> Callable[[Renderer], Renderer]:
    def register(function: Renderer) -> Renderer:
        RENDERERS[method] = function
        return function

    return register


def console():
    """The console every renderer prints with. Markup and emoji codes are off: what is
    printed comes from data, and "[red]PAID[/red]" or ":smile:" in a description is
    shown as written (``literal`` also escapes control characters)."""
    from rich.console import Console

    # Piped output gets a wide console: an address or txid must never be cut.
    width = None if sys.stdout.isatty() else 200
    return Console(highlight=False, markup=False, emoji=False, soft_wrap=True, width=width)


def literal(value: Any, *, one_line: bool = False):
    """A table cell or line from data: a rich Text (never parsed as markup) of the value
    with its control characters shown as escapes (``cli/text.py``). ``one_line``: cut
    with an ellipsis to the width the table gives it, instead of wrapping."""
    from rich.text import Text

    text = visible("" if value is None else value)
    return Text(text, no_wrap=True, overflow="ellipsis") if one_line else Text(text)


def add_row(table: Any, *values: Any) -> None:
    """A table row of literal cells (a value that is already a rich Text stays as is)."""
    from rich.text import Text

    table.add_row(*(v if isinstance(v, Text) else literal(v) for v in values))


def fields_table(rows: list[tuple[str, Any]]):
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        if value is None or value == "":
            continue
        add_row(table, name, value)
    return table


def short_time(iso: str | None) -> str:
    return "" if not iso else iso[:19].replace("T", " ")


# -- status ------------------------------------------------------------------------------


def _wallet_line(wallet: dict[str, Any]) -> str:
    return f"{wallet.get('fingerprint')} ({wallet.get('network')}, chain {wallet.get('chain')})"


def _shown(value: Any) -> str:
    return ("yes" if value else "no") if isinstance(value, bool) else str(value)


def figures(section: dict[str, Any] | None, skip: tuple[str, ...] = ()) -> str | None:
    """Every figure of a section of the answer, "name value, ...": a figure the JSON
    gains later is shown too, never hidden (nested sections get rows of their own)."""
    parts = [
        f"{key.replace('_', ' ')} {_shown(value)}"
        for key, value in (section or {}).items()
        if key not in skip and value is not None and not isinstance(value, dict | list)
    ]
    return ", ".join(parts) or None


# Shown in rows of their own, so left out of the section's figures.
# dashd's address index, as `status` shows it (None: not dashd, or not asked yet).
_INDEX = {True: "yes", False: "no (scantxoutset)"}
_OWN_ROWS = ("error", "last_error", "url", "socket_url", "state", "last_event_at", "at")


@renders("status")
def status(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    """Every reason and warning the JSON has, each on its row, then each component's
    figures: nothing that ``--json`` flags is left out."""
    wallet = result.get("wallet") or {}
    insight = result.get("insight") or {}
    chain = result.get("chain") or {}
    callbacks = result.get("callbacks") or {}
    verify = result.get("verify") or {}
    rescan, hold = result.get("last_rescan"), result.get("last_rescan_hold")
    receivers = result.get("receivers") or {}
    rows = [
        ("state", result.get("state")),
        *(("why", reason) for reason in result.get("reasons") or []),
        *(("warning", warning) for warning in result.get("warnings") or []),
        ("version", result.get("version")),
        ("uptime", f"{result.get('uptime_seconds', 0):.0f}s"),
        ("sandbox", "yes" if result.get("sandbox") else None),
        ("database", f"{result['database']['backend']} {result['database']['url']}"),
        ("database error", result["database"].get("error")),
        ("wallet", _wallet_line(wallet) if wallet else None),
        ("next hd index", wallet.get("next_index")),
        ("unpaid in a row", wallet.get("unpaid_in_a_row")),
        ("pending receivers", result.get("pending")),
        ("receivers", ", ".join(f"{n} {name}" for name, n in receivers.items()) or None),
        ("chain", _joined(chain.get("backend"), chain.get("state"), chain.get("endpoint"))),
        ("tip height", chain.get("tip_height")),
        ("last chain event", _age(chain.get("last_event_age_seconds"))),
        ("address index", _INDEX.get(chain.get("address_index"))),
        ("insight", _joined(insight.get("state"), insight.get("socket_url"))),
        ("insight events", figures(insight, _OWN_ROWS)),
        ("last insight event", insight.get("last_event_at")),
        ("engine", figures(result.get("engine"))),
        ("event checks", figures(verify)),
        ("last refused event", figures(verify.get("last_refused"))),
        ("callbacks", figures(callbacks, _OWN_ROWS)),
        ("callbacks last error", callbacks.get("last_error")),
        ("callbacks error", callbacks.get("error")),
        ("last rescan", _rescan_line(rescan) if rescan else "none yet"),
        ("last held rescan", _rescan_line(hold) if hold else None),
        ("http API", " ".join((result.get("http") or {}).get("urls") or []) or None),
        ("outbound", _outbound_line(result.get("outbound"))),
    ]
    console().print(fields_table(rows))
    return None


def _outbound_line(outbound: dict[str, Any] | None) -> str | None:
    """The proxy settings' sources (or "direct"), and the extra CA file."""
    if not outbound:
        return None
    line = "; ".join(outbound.get("sources") or []) or "direct"
    if outbound.get("ca_file"):
        line += f"; extra CAs {outbound['ca_file']} ({outbound.get('ca_certificates')})"
    return line


def _joined(*parts: str | None) -> str | None:
    return " ".join(p for p in parts if p) or None


def _age(seconds: float | None) -> str | None:
    return None if seconds is None else f"{seconds:.0f}s ago"


def _rescan_line(rescan: dict[str, Any]) -> str:
    return f"at {rescan.get('at')}: {figures(rescan, _OWN_ROWS)}"


# -- receivers ---------------------------------------------------------------------------


def receiver(receiver: dict[str, Any]) -> None:
    out = console()
    amount = f"{receiver['amount_dash']} DASH"
    if receiver.get("fiat_currency"):
        amount += f" ({receiver['fiat_amount']} {receiver['fiat_currency']})"
    flags = [name for name in ("overpaid", "late") if receiver.get(name)]
    rows = [
        ("receiver", receiver["receiver_id"]),
        ("address", receiver["address"]),
        ("status", receiver["status"] + (f" ({', '.join(flags)})" if flags else "")),
        ("amount", amount),
        (
            "rate",
            f"{receiver['rate']} {receiver['fiat_currency']}/DASH ({receiver['rate_provider']})"
            if receiver.get("rate")
            else None,
        ),
        ("received", f"{receiver['received_dash']} DASH"),
        ("payment uri", receiver["payment_uri"]),
        ("checkout page", receiver.get("checkout_url")),
        ("redirect url", receiver.get("redirect_url")),
        ("hd index", f"{receiver['chain']}/{receiver['hd_index']}"),
        ("description", receiver.get("description")),
        ("username", receiver.get("username")),
        ("callback url", receiver.get("callback_url")),
        ("created", receiver["created_at"]),
        ("expires", receiver.get("expires_at") or "never"),
        ("paid", receiver.get("paid_at")),
        ("settled", receiver.get("settled_at")),
        ("closed", receiver.get("closed_at")),
    ]
    out.print(fields_table(rows))
    payments = receiver.get("payments")
    if payments:
        from rich.table import Table

        table = Table(title="payments", title_justify="left")
        for column in ("txid", "amount (DASH)", "locked", "confirmations", "state"):
            table.add_column(column, no_wrap=True)
        for p in payments:
            add_row(
                table,
                p["txid"],
                p["amount_dash"],
                "yes" if p["instant_locked"] else "no",
                str(p["confirmations"]),
                "dropped" if p["dropped"] else "counted",
            )
        out.print(table)
    elif payments is not None:
        out.print("no payments yet")


@renders("receiver.create")
def receiver_create(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    if opts.get("quiet"):
        say(result["address"])
    else:
        receiver(result)
    return None


@renders("receiver.get")
def receiver_get(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    receiver(result)
    return None


@renders("receiver.list")
def receiver_list(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    from rich.table import Table

    table = Table()
    for column in ("id", "address", "status", "amount", "received", "created"):
        table.add_column(column, no_wrap=True)
    # The description takes the width that is left (the console's: the terminal's, or
    # 200 columns when piped) and is cut there with an ellipsis: one line a receiver.
    table.add_column("description", overflow="ellipsis")
    for r in result["receivers"]:
        add_row(
            table,
            str(r["receiver_id"]),
            r["address"],
            r["status"],
            r["amount_dash"],
            r["received_dash"],
            r["created_at"][:16].replace("T", " "),
            literal(r.get("description"), one_line=True),
        )
    out = console()
    out.print(table)
    if result.get("next_before_id"):
        say(f"more: dashpay receiver list --before {result['next_before_id']}")
    return None


@renders("receiver.cancel")
def receiver_cancel(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    say(f"receiver {result['receiver_id']} is {result['status']}")
    return None


@renders("rescan")
def rescan(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    say(
        f"checked {result['receivers_checked']} receiver(s): "
        f"{result['payments_found']} payment(s) found, {result['payments_new']} new, "
        f"{result['payments_missing']} newly missing from Insight, "
        f"{result['payments_dropped']} dropped in {result['duration_seconds']}s"
        + ("" if result.get("complete", True) else " (incomplete: see the daemon log)")
        + (
            " (held: too many payments missing at once, nothing flagged or dropped; "
            "see the daemon log)"
            if result.get("held")
            else ""
        )
    )
    return None


# -- callbacks ---------------------------------------------------------------------------


@renders("callbacks.list")
def callbacks_list(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    from rich.table import Table

    table = Table()
    for column in ("event id", "event", "receiver", "status", "attempts", "created", "next / done"):
        table.add_column(column, no_wrap=True)
    table.add_column("last error", overflow="fold")
    for event in result["events"]:
        pending = event["status"] == OUTBOX_PENDING
        when = event["next_attempt_at"] if pending else event["delivered_at"]
        add_row(
            table,
            event["event_id"],
            event["event"],
            str(event["receiver_id"]),
            event["status"],
            str(event["attempts"]),
            short_time(event["created_at"]),
            short_time(when),
            event.get("last_error") or "",
        )
    out = console()
    out.print(table)
    if result.get("next_before"):
        say(f"more: dashpay callbacks list --before {result['next_before']}")
    return None


@renders("callbacks.get")
def callbacks_get(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    out = console()
    out.print(
        fields_table(
            [
                ("event id", result["event_id"]),
                ("event", result["event"]),
                ("receiver", result["receiver_id"]),
                ("url", result.get("url") or "(none: set --callback-url or default_url)"),
                ("status", result["status"]),
                ("attempts", result["attempts"]),
                ("created", result["created_at"]),
                ("next attempt", result.get("next_attempt_at")),
                ("delivered", result.get("delivered_at")),
                ("last error", result.get("last_error")),
            ]
        )
    )
    attempts = result.get("attempt_log") or []
    if attempts:
        from rich.table import Table

        table = Table(title="attempts", title_justify="left")
        for column in ("at", "http status", "ms"):
            table.add_column(column, no_wrap=True)
        table.add_column("error", overflow="fold")
        for attempt in attempts:
            add_row(
                table,
                attempt["attempted_at"],
                "" if attempt["http_status"] is None else str(attempt["http_status"]),
                str(attempt["duration_ms"]),
                attempt.get("error") or "",
            )
        out.print(table)
    else:
        out.print("no attempts yet")
    out.print("body:")
    for line in json.dumps(result.get("payload"), indent=2, ensure_ascii=False).splitlines():
        say(line)
    return None


@renders("callbacks.retry")
def callbacks_retry(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    if result.get("event_ids") is None:
        say(f"queued {result['retried']} failed event(s) for delivery")
    else:
        say(f"queued {result['event_ids'][0]} for delivery")
    return None


@renders("callbacks.test")
def callbacks_test(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    console().print(
        fields_table(
            [
                ("url", result["url"]),
                ("result", "ok" if result["ok"] else "FAILED"),
                ("http status", result.get("http_status")),
                ("error", result.get("error")),
                ("answer", result.get("response_excerpt")),
                ("time", f"{result['duration_ms']} ms"),
                ("event id", result["event_id"]),
            ]
        )
    )
    return None


@renders("callbacks.secret")
def callbacks_secret(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    say(result["secret"])
    return None


# -- sandbox -----------------------------------------------------------------------------


@renders("sandbox.pay")
def sandbox_pay(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    say(result["txid"])
    return None


@renders("sandbox.mine")
def sandbox_mine(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    say(f"mined {len(result['blocks'])} block(s); height {result['height']}")
    return None


@renders("sandbox.drop")
def sandbox_drop(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    say(f"dropped {result['txid']}")
    return None


@renders("sandbox.lock")
def sandbox_lock(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    say(f"locked {result['txid']}")
    return None


# -- API keys ----------------------------------------------------------------------------


@renders("apikey.create")
def apikey_create(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    # The key alone on stdout (KEY=$(dashpay apikey create ...) works); the rest on stderr.
    print(
        f"api key {result['id']} ({result['label']}) with scopes {' '.join(result['scopes'])}; "
        "store the key now, it is not shown again:",
        file=sys.stderr,
    )
    print(result["key"])
    return None


@renders("apikey.list")
def apikey_list(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    from rich.table import Table
    from rich.text import Text

    keys = result["api_keys"]
    if not keys:
        print("no API keys yet: dashpay apikey create --label NAME --scope SCOPE")
        return None
    table = Table()
    for column in ("id", "prefix", "label", "scopes", "created", "last used", "revoked"):
        table.add_column(column, no_wrap=column != "label", overflow="fold")
    for key in keys:
        table.add_row(
            str(key["id"]),
            Text(key["prefix"]),
            Text(key["label"]),  # the label is the user's text, never rich markup
            " ".join(key["scopes"]),
            short_time(key["created_at"]),
            short_time(key["last_used_at"]),
            short_time(key["revoked_at"]),
        )
    console().print(table)
    return None


@renders("apikey.revoke")
def apikey_revoke(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    print(f"api key {result['id']} ({result['label']}) revoked at {result['revoked_at']}")
    return None
