"""How the CLI shows each command's answer (human output; ``--json`` prints the answer
as it is). One function per command of the table, by its method name: it gets the
answer and the command's CLI-only options, and returns an exit code or None (0)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from dashpay.domain.errors import EXIT_NOT_READY, EXIT_REJECTED, EXIT_UPSTREAM
from dashpay.domain.status import OUTBOX_PENDING

Renderer = Callable[[dict[str, Any], dict[str, Any]], int | None]
RENDERERS: dict[str, Renderer] = {}


def renders(method: str) -> Callable[[Renderer], Renderer]:
    def register(function: Renderer) -> Renderer:
        RENDERERS[method] = function
        return function

    return register


def console():
    from rich.console import Console

    # Piped output gets a wide console: an address or txid must never be cut.
    width = None if sys.stdout.isatty() else 200
    return Console(highlight=False, soft_wrap=True, width=width)


def fields_table(rows: list[tuple[str, Any]]):
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        if value is None or value == "":
            continue
        table.add_row(name, str(value))
    return table


def short_time(iso: str | None) -> str:
    return "" if not iso else iso[:19].replace("T", " ")


# -- status ------------------------------------------------------------------------------


def _wallet_line(wallet: dict[str, Any]) -> str:
    return f"{wallet.get('fingerprint')} ({wallet.get('network')}, chain {wallet.get('chain')})"


@renders("status")
def status(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    wallet = result.get("wallet") or {}
    insight = result.get("insight") or {}
    rows = [
        ("state", result.get("state")),
        ("why", "; ".join(result.get("reasons") or []) or None),
        ("warnings", "; ".join(result.get("warnings") or []) or None),
        ("version", result.get("version")),
        ("uptime", f"{result.get('uptime_seconds', 0):.0f}s"),
        ("sandbox", "yes" if result.get("sandbox") else None),
        ("database", f"{result['database']['backend']} {result['database']['url']}"),
        ("database error", result["database"].get("error")),
        ("wallet", _wallet_line(wallet) if wallet else None),
        ("next hd index", wallet.get("next_index")),
        ("pending receivers", result.get("pending")),
        ("insight", insight.get("state")),
        ("last insight event", insight.get("last_event_at")),
        ("callbacks pending", (result.get("callbacks") or {}).get("pending")),
        ("http API", " ".join((result.get("http") or {}).get("urls") or []) or None),
    ]
    console().print(fields_table(rows))
    return None


def status_exit(result: dict[str, Any]) -> int | None:
    """`status` exits 1 when the daemon answers but is not ready, --json or not."""
    return None if result.get("ready") else EXIT_NOT_READY


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
            table.add_row(
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
        print(result["address"])
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
    table.add_column("description", overflow="fold")
    for r in result["receivers"]:
        table.add_row(
            str(r["receiver_id"]),
            r["address"],
            r["status"],
            r["amount_dash"],
            r["received_dash"],
            r["created_at"][:16].replace("T", " "),
            r.get("description") or "",
        )
    out = console()
    out.print(table)
    if result.get("next_before_id"):
        out.print(f"more: dashpay receiver list --before {result['next_before_id']}")
    return None


@renders("receiver.cancel")
def receiver_cancel(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    print(f"receiver {result['receiver_id']} is {result['status']}")
    return None


@renders("rescan")
def rescan(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    print(
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
        table.add_row(
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
        out.print(f"more: dashpay callbacks list --before {result['next_before']}")
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
            table.add_row(
                attempt["attempted_at"],
                "" if attempt["http_status"] is None else str(attempt["http_status"]),
                str(attempt["duration_ms"]),
                attempt.get("error") or "",
            )
        out.print(table)
    else:
        out.print("no attempts yet")
    out.print("body:")
    out.print(json.dumps(result.get("payload"), indent=2, ensure_ascii=False), markup=False)
    return None


@renders("callbacks.retry")
def callbacks_retry(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    if result.get("event_ids") is None:
        print(f"queued {result['retried']} failed event(s) for delivery")
    else:
        print(f"queued {result['event_ids'][0]} for delivery")
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


def callbacks_test_exit(result: dict[str, Any]) -> int | None:
    """0 on a 2xx, 4 when the [callbacks] rules refuse the URL, 5 otherwise."""
    if result["ok"]:
        return None
    refused = (result.get("error") or "").startswith("refused:")
    return EXIT_REJECTED if refused else EXIT_UPSTREAM


@renders("callbacks.secret")
def callbacks_secret(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    print(result["secret"])
    return None


# -- sandbox -----------------------------------------------------------------------------


@renders("sandbox.pay")
def sandbox_pay(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    print(result["txid"])
    return None


@renders("sandbox.mine")
def sandbox_mine(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    print(f"mined {len(result['blocks'])} block(s); height {result['height']}")
    return None


@renders("sandbox.drop")
def sandbox_drop(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    print(f"dropped {result['txid']}")
    return None


@renders("sandbox.lock")
def sandbox_lock(result: dict[str, Any], opts: dict[str, Any]) -> int | None:
    print(f"locked {result['txid']}")
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
