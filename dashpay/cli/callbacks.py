"""`dashpay callbacks ...`: inspect and redeliver callbacks, test an endpoint, show the
signing secret. A thin layer over the ``callbacks.*`` control methods.

Kept apart from ``dashpay/cli.py`` (which adds this sub-app at its end), so the helpers
of that module are imported inside the commands: importing them here at the top would
be circular. Like the rest of the CLI it imports neither trio nor httpx.
"""

from __future__ import annotations

from typing import Any

import typer

from dashpay.api import methods
from dashpay.domain.errors import EXIT_REJECTED, EXIT_UPSTREAM, EXIT_USAGE

callbacks_app = typer.Typer(
    help="Inspect, redeliver and test callbacks (signed POSTs to your backend).",
    no_args_is_help=True,
)

# The same text as dashpay.cli.JSON_HELP (that module cannot be imported from here at
# import time: it imports this one).
JSON_HELP = "Print the result as JSON (the same data the control socket returns)."


def _positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        from dashpay.cli.app import fail

        fail(f"{option} must be a positive integer, got {value}", EXIT_USAGE)


def _short_time(iso: str | None) -> str:
    return "" if not iso else iso[:19].replace("T", " ")


@callbacks_app.command("list")
def callbacks_list(
    ctx: typer.Context,
    status: str | None = typer.Option(
        None, "--status", help="Only pending, delivered or failed events."
    ),
    receiver_id: int | None = typer.Option(None, "--receiver", help="Only this receiver's."),
    limit: int = typer.Option(50, "--limit", help="At most this many (1-1000), newest first."),
    before: int | None = typer.Option(None, "--before", help="Page on: the value printed last."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List callback events, newest first."""
    from dashpay.cli.app import _console, call, fail, print_json
    from dashpay.domain.status import OUTBOX_STATUSES

    if status is not None and status not in OUTBOX_STATUSES:
        fail(f"--status must be one of {', '.join(OUTBOX_STATUSES)}, got {status!r}", EXIT_USAGE)
    if not 1 <= limit <= 1000:
        fail(f"--limit must be from 1 to 1000, got {limit}", EXIT_USAGE)
    _positive(receiver_id, "--receiver")
    _positive(before, "--before")
    params: dict[str, Any] = {"limit": limit}
    for name, value in (("status", status), ("receiver_id", receiver_id), ("before", before)):
        if value is not None:
            params[name] = value
    result = call(ctx, methods.CALLBACKS_LIST, params)
    if as_json:
        print_json(result)
        return
    from rich.table import Table

    table = Table()
    for column in ("event id", "event", "receiver", "status", "attempts", "created", "next / done"):
        table.add_column(column, no_wrap=True)
    table.add_column("last error", overflow="fold")
    for event in result["events"]:
        when = event["next_attempt_at"] if event["status"] == "pending" else event["delivered_at"]
        table.add_row(
            event["event_id"],
            event["event"],
            str(event["receiver_id"]),
            event["status"],
            str(event["attempts"]),
            _short_time(event["created_at"]),
            _short_time(when),
            event.get("last_error") or "",
        )
    console = _console()
    console.print(table)
    if result.get("next_before"):
        console.print(f"more: dashpay callbacks list --before {result['next_before']}")


@callbacks_app.command("show")
def callbacks_show(
    ctx: typer.Context,
    event_id: str = typer.Argument(..., metavar="EVENT_ID", help="Event id (Dashpay-Delivery)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show one event: where it goes, its state, its attempt log and its body."""
    from dashpay.cli.app import _console, _fields_table, call, print_json

    result = call(ctx, methods.CALLBACKS_GET, {"event_id": event_id})
    if as_json:
        print_json(result)
        return
    console = _console()
    console.print(
        _fields_table(
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
        console.print(table)
    else:
        console.print("no attempts yet")
    import json

    console.print("body:")
    console.print(json.dumps(result.get("payload"), indent=2, ensure_ascii=False), markup=False)


@callbacks_app.command("retry")
def callbacks_retry(
    ctx: typer.Context,
    event_id: str | None = typer.Argument(
        None, metavar="[EVENT_ID]", help="The event to send again (same Dashpay-Delivery)."
    ),
    all_failed: bool = typer.Option(False, "--all-failed", help="Every failed event."),
    receiver_id: int | None = typer.Option(
        None, "--receiver", help="With --all-failed: only this receiver's."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Deliver an event again now (failed, delivered or waiting to retry), or every
    failed one; the event id stays the same, so your handler can de-duplicate."""
    from dashpay.cli.app import call, fail, print_json

    if (event_id is None) == (not all_failed):
        fail("give an EVENT_ID or --all-failed (not both)", EXIT_USAGE)
    if receiver_id is not None and not all_failed:
        fail("--receiver goes with --all-failed", EXIT_USAGE)
    _positive(receiver_id, "--receiver")
    params: dict[str, Any] = {"all_failed": True} if all_failed else {"event_id": event_id}
    if receiver_id is not None:
        params["receiver_id"] = receiver_id
    result = call(ctx, methods.CALLBACKS_RETRY, params)
    if as_json:
        print_json(result)
    elif all_failed:
        print(f"queued {result['retried']} failed event(s) for delivery")
    else:
        print(f"queued {event_id} for delivery")


@callbacks_app.command("test")
def callbacks_test(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="Your callback endpoint, e.g. https://shop.example/cb"),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Send a signed `ping` event to URL and report the answer (exit 0 on a 2xx, 4 when
    the [callbacks] rules refuse the URL, 5 on any other answer or none)."""
    from dashpay.cli.app import _console, _fields_table, call, print_json

    result = call(ctx, methods.CALLBACKS_TEST, {"url": url})
    if as_json:
        print_json(result)
    else:
        _console().print(
            _fields_table(
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
    if result["ok"]:
        return
    refused = (result.get("error") or "").startswith("refused:")
    raise typer.Exit(EXIT_REJECTED if refused else EXIT_UPSTREAM)


@callbacks_app.command("secret")
def callbacks_secret(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Print the secret that signs callbacks (copy it into your handler)."""
    from dashpay.cli.app import call, print_json

    result = call(ctx, methods.CALLBACKS_SECRET, {})
    if as_json:
        print_json(result)
    else:
        print(result["secret"])
