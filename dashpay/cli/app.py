"""The `dashpay` command line: a thin layer over the control socket.

Commands that talk to the daemon import neither trio, httpx nor bip-utils (they cost
~0.25 s, ~0.15 s and ~0.4 s to import); those live behind `serve`, `wallet derive`
and `db migrate`. The CLI never computes money: it shows what the daemon returns.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer

from dashpay import __version__
from dashpay.api import methods
from dashpay.domain.errors import (
    EXIT_NOT_READY,
    EXIT_REJECTED,
    EXIT_UNREACHABLE,
    EXIT_UPSTREAM,
    EXIT_USAGE,
    DashpayError,
    exit_code_for,
)

app = typer.Typer(
    name="dashpay",
    help="Self-hosted, watch-only Dash payment processor.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
receiver_app = typer.Typer(
    help="Create and inspect receivers (payment requests).", no_args_is_help=True
)
wallet_app = typer.Typer(help="Offline wallet tools.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration tools.", no_args_is_help=True)
db_app = typer.Typer(help="Database tools.", no_args_is_help=True)
sandbox_app = typer.Typer(
    help="Drive the simulated network of `dashpay serve --sandbox`.", no_args_is_help=True
)
app.add_typer(receiver_app, name="receiver")
app.add_typer(wallet_app, name="wallet")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(sandbox_app, name="sandbox")

# A rescan of many receivers takes a while (the daemon's own request limit is higher).
RESCAN_TIMEOUT = 600.0
JSON_HELP = "Print the result as JSON (the same data the control socket returns)."


@dataclass
class Globals:
    config: str | None = None
    socket: str | None = None


def fail(message: str, code: int, hint: str | None = None) -> NoReturn:
    text = f"dashpay: error: {message}"
    if hint:
        text += f"\n{hint}"
    print(text, file=sys.stderr)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# -- configuration and socket resolution ----------------------------------------------


def _load_config(g: Globals, *, required: bool):
    """The Config from --config / $DASHPAY_CONFIG / /etc/dashpay/config.toml, or None."""
    from dashpay.config.errors import ConfigError
    from dashpay.config.files import resolve_config_path
    from dashpay.config.load import load_config

    try:
        path, source = resolve_config_path(g.config)
        if path is None:
            if required:
                fail(
                    "no configuration file found",
                    EXIT_USAGE,
                    "Pass --config PATH, set DASHPAY_CONFIG, or create /etc/dashpay/config.toml "
                    "(see config.example.toml); or try `dashpay serve --sandbox`.",
                )
            return None
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def socket_path(g: Globals) -> tuple[Path, str]:
    """--socket, else $DASHPAY_SOCKET, else the config's [control] socket, else (no
    config anywhere) the sandbox daemon's socket."""
    if g.socket:
        return Path(g.socket), "--socket"
    env = os.environ.get("DASHPAY_SOCKET")
    if env:
        return Path(env), "DASHPAY_SOCKET"
    from dashpay.config.control import load_control_config
    from dashpay.config.errors import ConfigError
    from dashpay.config.files import resolve_config_path

    try:
        path, _ = resolve_config_path(g.config)
        if path is not None:
            # Only [control]: the daemon validates the rest and alone may read its
            # secret files (systemd credentials are not there for a shell script).
            control = load_control_config(path)
            return Path(control.socket), f"[control] socket in {path}"
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    from dashpay.config.paths import sandbox_socket

    return sandbox_socket(), "sandbox default (no config file found)"


def call(
    ctx: typer.Context,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    timeout: float = 65.0,
) -> Any:
    from dashpay.net.control_client import ControlClient, DaemonUnreachable
    from dashpay.wire.jsonrpc import RemoteError

    path, source = socket_path(ctx.obj)
    try:
        with ControlClient(path, timeout=timeout) as client:
            return client.call(method, params or {})
    except DaemonUnreachable as exc:
        fail(f"{exc} [socket from {source}]", EXIT_UNREACHABLE)
    except RemoteError as exc:
        fail(f"{exc.message} [{exc.kind}]", exit_code_for(exc.kind))
    except TimeoutError as exc:
        fail(f"the daemon did not answer in time ({exc})", EXIT_UPSTREAM)


# -- rendering ------------------------------------------------------------------------


def _console():
    from rich.console import Console

    # Piped output gets a wide console: an address or txid must never be cut.
    width = None if sys.stdout.isatty() else 200
    return Console(highlight=False, soft_wrap=True, width=width)


def _fields_table(rows: list[tuple[str, Any]]):
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        if value is None or value == "":
            continue
        table.add_row(name, str(value))
    return table


def render_receiver(receiver: dict[str, Any]) -> None:
    console = _console()
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
    console.print(_fields_table(rows))
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
        console.print(table)
    elif payments is not None:
        console.print("no payments yet")


# -- global options -------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        print(f"dashpay {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    ctx: typer.Context,
    config: str | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Config file (default: $DASHPAY_CONFIG, /etc/dashpay/config.toml).",
    ),
    socket: str | None = typer.Option(
        None, "--socket", help="Control socket (default: $DASHPAY_SOCKET, then \\[control] socket)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    ctx.obj = Globals(config=config, socket=socket)


# -- serve ----------------------------------------------------------------------------


@app.command()
def serve(
    ctx: typer.Context,
    sandbox: bool = typer.Option(
        False,
        "--sandbox",
        help="Run on embedded defaults against a simulated Dash network (no config needed).",
    ),
    log_level: str | None = typer.Option(
        None, "--log-level", help="debug, info, warning or error (default: \\[logging] level)."
    ),
) -> None:
    """Run the daemon (foreground; systemd runs it as a Type=notify service)."""
    from dashpay.daemon.logs import LEVELS, setup_logging

    if log_level is not None and log_level not in LEVELS:
        fail(f"--log-level must be one of {', '.join(LEVELS)}, got {log_level!r}", EXIT_USAGE)
    if sandbox:
        from dashpay.sandbox.runtime import run_sandbox_daemon

        g: Globals = ctx.obj
        config = _load_config(g, required=False) if g.config else None
        setup_logging(log_level or (config.logging.level if config else "info"))
        code = run_sandbox_daemon(config, socket=g.socket)
        raise typer.Exit(code)
    config = _load_config(ctx.obj, required=True)
    if ctx.obj.socket:
        import dataclasses

        config = dataclasses.replace(
            config, control=dataclasses.replace(config.control, socket=Path(ctx.obj.socket))
        )
    setup_logging(log_level or config.logging.level)
    from dashpay.daemon.root import run_daemon

    raise typer.Exit(run_daemon(config))


# -- status ---------------------------------------------------------------------------


def _wallet_line(wallet: dict[str, Any]) -> str:
    return f"{wallet.get('fingerprint')} ({wallet.get('network')}, chain {wallet.get('chain')})"


@app.command()
def status(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)
) -> None:
    """Show the daemon's state; exits 1 when it answers but is not ready."""
    result = call(ctx, methods.STATUS)
    if as_json:
        print_json(result)
    else:
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
        ]
        _console().print(_fields_table(rows))
    if not result.get("ready"):
        raise typer.Exit(EXIT_NOT_READY)


# -- receivers ------------------------------------------------------------------------


@receiver_app.command("new")
def receiver_new(
    ctx: typer.Context,
    amount: str = typer.Option(..., "--amount", help="Amount due, e.g. 1.5 (in --currency)."),
    currency: str = typer.Option("DASH", "--currency", help="DASH or a fiat code such as USD."),
    callback_url: str | None = typer.Option(None, "--callback-url", help="Where callbacks go."),
    description: str | None = typer.Option(None, "--description", help="Up to 255 characters."),
    username: str | None = typer.Option(None, "--username", help="Up to 255 characters."),
    expires_after: str | None = typer.Option(
        None, "--expires-after", help="e.g. 30m, 2h, 3d; 0 = never (default: config)."
    ),
    idempotency_key: str | None = typer.Option(
        None,
        "--idempotency-key",
        help="Repeating a call with the same key returns the same receiver.",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the address."),
) -> None:
    """Create a receiver: a fresh address and an amount due."""
    from dashpay.api.params import parse_create_receiver

    params = {
        "amount": amount,
        "currency": currency,
        "callback_url": callback_url,
        "description": description,
        "username": username,
        "expires_after": expires_after,
        "idempotency_key": idempotency_key,
    }
    params = {k: v for k, v in params.items() if v is not None}
    try:
        parse_create_receiver(params)  # the daemon validates again; this fails fast
    except DashpayError as exc:
        fail(exc.message, EXIT_USAGE)
    result = call(ctx, methods.RECEIVER_CREATE, params)
    if quiet:
        print(result["address"])
    elif as_json:
        print_json(result)
    else:
        render_receiver(result)


def _receiver_id(value: str) -> int:
    from dashpay.api.params import receiver_id_value

    try:
        return receiver_id_value(value)
    except DashpayError as exc:
        fail(exc.message, EXIT_USAGE)


@receiver_app.command("show")
def receiver_show(
    ctx: typer.Context,
    receiver_id: str = typer.Argument(..., metavar="ID", help="Receiver id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show one receiver with its payments."""
    result = call(ctx, methods.RECEIVER_GET, {"receiver_id": _receiver_id(receiver_id)})
    if as_json:
        print_json(result)
    else:
        render_receiver(result)


@receiver_app.command("list")
def receiver_list(
    ctx: typer.Context,
    status_filter: str | None = typer.Option(None, "--status", help="Only this status."),
    limit: int = typer.Option(50, "--limit", help="At most this many (1-1000), newest first."),
    before: int | None = typer.Option(None, "--before", help="Only receivers with a lower id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List receivers, newest first."""
    from dashpay.api.params import parse_list_receivers
    from dashpay.domain.status import STATUSES

    params: dict[str, Any] = {"limit": limit}
    if status_filter is not None:
        params["status"] = status_filter
    if before is not None:
        params["before_id"] = before
    try:
        parse_list_receivers(params, STATUSES)
    except DashpayError as exc:
        fail(exc.message, EXIT_USAGE)
    result = call(ctx, methods.RECEIVER_LIST, params)
    if as_json:
        print_json(result)
        return
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
    console = _console()
    console.print(table)
    if result.get("next_before_id"):
        console.print(f"more: dashpay receiver list --before {result['next_before_id']}")


@receiver_app.command("cancel")
def receiver_cancel(
    ctx: typer.Context,
    receiver_id: str = typer.Argument(..., metavar="ID", help="Receiver id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Cancel a receiver that is not paid yet (late payments are still recorded)."""
    result = call(ctx, methods.RECEIVER_CANCEL, {"receiver_id": _receiver_id(receiver_id)})
    if as_json:
        print_json(result)
    else:
        print(f"receiver {result['receiver_id']} is {result['status']}")


@app.command()
def rescan(
    ctx: typer.Context,
    receiver_ids: list[str] | None = typer.Argument(None, metavar="[ID]...", help="Receivers."),
    all_pending: bool = typer.Option(False, "--all-pending", help="Every watched receiver."),
    since: str | None = typer.Option(
        None, "--since", help="Receivers created in this window, e.g. 48h."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Reconcile receivers against Insight (safe from cron at any time)."""
    chosen = sum((bool(receiver_ids), all_pending, since is not None))
    if chosen > 1:
        fail("give receiver IDs, --all-pending or --since, not several", EXIT_USAGE)
    params: dict[str, Any] = {}
    if receiver_ids:
        params["receiver_ids"] = [_receiver_id(i) for i in receiver_ids]
    elif since is not None:
        from dashpay.config.durations import parse_duration

        try:
            parse_duration(since, key="--since")
        except ValueError as exc:
            fail(str(exc), EXIT_USAGE)
        params["since"] = since
    else:
        params["all_pending"] = True
    result = call(ctx, methods.RESCAN, params, timeout=RESCAN_TIMEOUT)
    if as_json:
        print_json(result)
        return
    print(
        f"checked {result['receivers_checked']} receiver(s): "
        f"{result['payments_found']} payment(s) found, {result['payments_new']} new, "
        f"{result['payments_dropped']} dropped in {result['duration_seconds']}s"
        + ("" if result.get("complete", True) else " (incomplete: see the daemon log)")
    )


@app.command()
def price(
    ctx: typer.Context,
    currencies: list[str] | None = typer.Argument(None, help="Currency codes, e.g. USD EUR."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show the DASH price of fiat currencies: quote, provider and age."""
    from dashpay.cli.prices import price_command

    price_command(ctx, currencies, as_json)


# -- offline tools --------------------------------------------------------------------


@wallet_app.command("derive")
def wallet_derive(
    ctx: typer.Context,
    xpub: str | None = typer.Option(None, "--xpub", help="Extended public key (default: config)."),
    network: str | None = typer.Option(None, "--network", help="mainnet or testnet."),
    chain: int | None = typer.Option(None, "--chain", help="Chain (default: config, else 0)."),
    start: int = typer.Option(0, "--start", help="First index."),
    count: int = typer.Option(10, "--count", help="How many addresses (1-10000)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Derive addresses offline, to check them against your wallet."""
    from dashpay.domain.wallet import NETWORKS, Wallet, WalletKeyError, parse_extended_public_key

    if xpub is None:
        config = _load_config(ctx.obj, required=True)
        if config.wallet is None:
            fail(f"{config.path}: [wallet] xpub is not set; or pass --xpub", EXIT_USAGE)
        xpub = config.wallet.xpub
        network = network or config.wallet.network
        chain = config.wallet.chain if chain is None else chain
    if network is None:
        fail("--network is required with --xpub (mainnet or testnet)", EXIT_USAGE)
    if network not in NETWORKS:
        fail(f"--network must be mainnet or testnet, got {network!r}", EXIT_USAGE)
    chain = 0 if chain is None else chain
    if not 0 <= chain < 2**31:
        fail(f"--chain must be from 0 to {2**31 - 1}", EXIT_USAGE)
    if not 1 <= count <= 10_000:
        fail("--count must be from 1 to 10000", EXIT_USAGE)
    if not start >= 0 or start + count > 2**31:
        fail(f"--start must be from 0 to {2**31 - count}", EXIT_USAGE)
    try:
        key = parse_extended_public_key(xpub, network)
        wallet = Wallet(key, network, chain)
        addresses = wallet.addresses(start, count)
    except (WalletKeyError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)
    rows = [
        {"index": start + i, "path": f"{chain}/{start + i}", "address": address}
        for i, address in enumerate(addresses)
    ]
    if as_json:
        print_json(
            {
                "network": network,
                "chain": chain,
                "fingerprint": wallet.fingerprint,
                "addresses": rows,
            }
        )
    else:
        for row in rows:
            print(f"{row['path']}\t{row['address']}")


@config_app.command("check")
def config_check(
    ctx: typer.Context,
    path: str | None = typer.Argument(None, help="Config file (default: the usual lookup)."),
) -> None:
    """Validate a config file offline; exit 2 with the problem if it is wrong."""
    from dashpay.config.errors import ConfigError
    from dashpay.config.files import resolve_config_path
    from dashpay.config.load import load_config

    try:
        found, source = resolve_config_path(path or ctx.obj.config)
        if found is None:
            fail(
                "no configuration file found (pass a path, --config or set DASHPAY_CONFIG)",
                EXIT_USAGE,
            )
        config = load_config(found)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    if config.wallet is None:
        fail(f"{found}: [wallet] xpub is required to run the daemon", EXIT_USAGE)
    print(
        f"{found}: ok (wallet {config.wallet.network}, chain {config.wallet.chain}; "
        f"database {config.database.display_url()}; socket {config.control.socket})"
    )


@db_app.command("migrate")
def db_migrate(ctx: typer.Context) -> None:
    """Apply pending database migrations (the daemon also does this at start)."""
    config = _load_config(ctx.obj, required=True)
    from dashpay.repository import open_repository

    try:
        repo = open_repository(config.database)
        try:
            applied = repo.migrate()
            version = repo.schema_version()
        finally:
            repo.close()
    except DashpayError as exc:
        fail(exc.message, exit_code_for(exc.kind))
    if applied:
        print(f"applied migrations {', '.join(map(str, applied))}; schema version {version}")
    else:
        print(f"schema is up to date (version {version})")


# -- sandbox --------------------------------------------------------------------------


@sandbox_app.command("pay")
def sandbox_pay(
    ctx: typer.Context,
    address: str = typer.Argument(..., help="Address to pay."),
    amount: str = typer.Argument(..., help="Amount in DASH, e.g. 1.5"),
    no_lock: bool = typer.Option(False, "--no-lock", help="Do not InstantSend-lock the payment."),
    silent: bool = typer.Option(
        False, "--silent", help="Visible over REST only, no socket event (exercises rescans)."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Pay an address on the sandbox network."""
    from dashpay.domain.money import AmountError, dash_to_duffs

    try:
        dash_to_duffs(amount)
    except AmountError as exc:
        fail(str(exc), EXIT_USAGE)
    result = call(
        ctx,
        methods.SANDBOX_PAY,
        {"address": address, "amount": amount, "lock": not no_lock, "silent": silent},
    )
    print_json(result) if as_json else print(result["txid"])


@sandbox_app.command("mine")
def sandbox_mine(
    ctx: typer.Context,
    blocks: int = typer.Option(1, "--blocks", help="How many blocks (1-1000)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Mine blocks on the sandbox network (confirms the mempool)."""
    if not 1 <= blocks <= 1000:
        fail("--blocks must be from 1 to 1000", EXIT_USAGE)
    result = call(ctx, methods.SANDBOX_MINE, {"blocks": blocks})
    if as_json:
        print_json(result)
    else:
        print(f"mined {len(result['blocks'])} block(s); height {result['height']}")


@sandbox_app.command("drop")
def sandbox_drop(
    ctx: typer.Context,
    txid: str = typer.Argument(..., help="Mempool transaction to drop (as a double spend would)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Drop a mempool transaction from the sandbox network."""
    result = call(ctx, methods.SANDBOX_DROP, {"txid": txid})
    print_json(result) if as_json else print(f"dropped {txid}")


@sandbox_app.command("lock")
def sandbox_lock(
    ctx: typer.Context,
    txid: str = typer.Argument(..., help="Mempool transaction to InstantSend-lock."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """InstantSend-lock a sandbox transaction now."""
    result = call(ctx, methods.SANDBOX_LOCK, {"txid": txid})
    print_json(result) if as_json else print(f"locked {txid}")


from dashpay.cli.callbacks import callbacks_app  # noqa: E402 - it imports this module's helpers lazily

app.add_typer(callbacks_app, name="callbacks")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None


__all__ = ["app", "main", "EXIT_REJECTED"]
