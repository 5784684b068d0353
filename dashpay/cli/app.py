"""The `dashpay` command line: a thin layer over the control socket.

The commands that talk to the daemon are generated from the command table
(``cli/commands.py`` over ``api/commands.py``); the offline ones (serve, wallet derive,
config check, db migrate, sandbox reset) are here. Commands that talk to the daemon import neither
trio, httpx nor bip-utils (they cost ~0.25 s, ~0.15 s and ~0.4 s to import); those live
behind `serve`, `wallet derive` and `db migrate`. The CLI never computes money: it
shows what the daemon returns.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dashpay import __version__
from dashpay.cli import commands
from dashpay.cli.context import JSON_HELP, Globals, _load_config, fail, print_json
from dashpay.domain.errors import EXIT_REJECTED, EXIT_USAGE, DashpayError, exit_code_for

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
callbacks_app = typer.Typer(
    help="Inspect, redeliver and test callbacks (signed POSTs to your backend).",
    no_args_is_help=True,
)
app.add_typer(receiver_app, name="receiver")
app.add_typer(wallet_app, name="wallet")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(sandbox_app, name="sandbox")
apikey_app = typer.Typer(
    help="API keys of the HTTP API: create (printed once), list, revoke.", no_args_is_help=True
)
app.add_typer(apikey_app, name="apikey")

app.add_typer(callbacks_app, name="callbacks")


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
    send_callbacks: bool = typer.Option(
        False,
        "--send-callbacks",
        help="With --sandbox and --config: send the sandbox's callbacks as that config's "
        "\\[callbacks] says (default_url, secret). Without it a sandbox posts only to a "
        "receiver's own --callback-url.",
    ),
    log_level: str | None = typer.Option(
        None, "--log-level", help="debug, info, warning or error (default: \\[logging] level)."
    ),
) -> None:
    """Run the daemon (foreground; systemd runs it as a Type=notify service)."""
    from dashpay.daemon.logs import LEVELS, setup_logging

    if log_level is not None and log_level not in LEVELS:
        fail(f"--log-level must be one of {', '.join(LEVELS)}, got {log_level!r}", EXIT_USAGE)
    if send_callbacks and not sandbox:
        fail("--send-callbacks goes with --sandbox (a daemon on its config sends them)", EXIT_USAGE)
    if sandbox:
        from dashpay.daemon.sandbox import run_sandbox_daemon

        g: Globals = ctx.obj
        config = _load_config(g, required=False) if g.config else None
        if send_callbacks and config is None:
            fail(
                "--send-callbacks sends to the [callbacks] of a config file: pass --config "
                "FILE too (without it, only a receiver's own --callback-url gets callbacks)",
                EXIT_USAGE,
            )
        setup_logging(log_level or (config.logging.level if config else "info"))
        code = run_sandbox_daemon(config, socket=g.socket, send_callbacks=send_callbacks)
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


@sandbox_app.command("reset")
def sandbox_reset(
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask first."),
) -> None:
    """Start the sandbox over: delete its chain and database (the wallet key stays).

    Refused while `dashpay serve --sandbox` runs on them."""
    import sys

    from dashpay.config.paths import state_dir
    from dashpay.sandbox.state import SandboxState, SandboxStateError, reset_state

    state = SandboxState(state_dir())
    if not yes:
        if not sys.stdin.isatty():
            fail(f"this deletes the sandbox's chain and database in {state.directory}; "
                 "pass --yes to do it without a question", EXIT_USAGE)  # fmt: skip
        typer.confirm(f"Delete the sandbox's chain and database in {state.directory}?", abort=True)
    try:
        removed = reset_state(state)
    except SandboxStateError as exc:
        fail(exc.message, exc.exit_code)
    if removed:
        print(f"deleted {', '.join(p.name for p in removed)} in {state.directory}")
    else:
        print(f"nothing to reset in {state.directory}")


commands.add_to(
    {
        "": app,
        "receiver": receiver_app,
        "callbacks": callbacks_app,
        "sandbox": sandbox_app,
        "apikey": apikey_app,
    }
)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None


__all__ = ["app", "main", "EXIT_REJECTED"]
