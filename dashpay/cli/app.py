"""The `dashpay` command line: a thin layer over the control socket.

The commands that talk to the daemon are generated from the command table
(``cli/commands.py`` over ``api/commands.py``); the offline ones (serve, wallet derive,
config check, db migrate, sandbox reset) are here. Commands that talk to the daemon import neither
trio, httpx nor bip-utils (they cost ~0.25 s, ~0.15 s and ~0.4 s to import); those live
behind `serve`, `wallet derive` and `db migrate`. The CLI never computes money: it
shows what the daemon returns.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import typer

from dashpay import __version__
from dashpay.cli import commands
from dashpay.cli.context import (
    JSON_HELP,
    Globals,
    _load_config,
    fail,
    fail_on,
    internal_error,
    json_errors,
)
from dashpay.cli.text import help_text, print_json
from dashpay.domain.errors import EXIT_REJECTED, EXIT_USAGE, DashpayError

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
        None,
        "--socket",
        help=help_text("Control socket (default: $DASHPAY_SOCKET, then [control] socket)."),
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
        help=help_text(
            "With --sandbox and --config: send the sandbox's callbacks as that config's "
            "[callbacks] says (default_url, secret). Without it a sandbox posts only to a "
            "receiver's own --callback-url."
        ),
    ),
    log_level: str | None = typer.Option(
        None,
        "--log-level",
        help=help_text("debug, info, warning or error (default: [logging] level)."),
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
    from dashpay.daemon.root import serve as serve_config

    raise typer.Exit(serve_config(config, socket=ctx.obj.socket, log_level=log_level))


# -- offline tools --------------------------------------------------------------------


def _derive_source(g: Globals) -> tuple[str, str | None, int | None, str]:
    """(key, network or None, chain or None, where they came from) when no --xpub is
    given: the config's [wallet], else (no config file at all) the sandbox's key."""
    config = _load_config(g, required=False)
    if config is not None:
        if config.wallet is None:
            fail(f"{config.path}: [wallet] xpub is not set; or pass --xpub", EXIT_USAGE)
        return config.wallet.xpub, config.wallet.network, config.wallet.chain, str(config.path)
    from dashpay.config.paths import SANDBOX_KEY_NAME, state_dir
    from dashpay.sandbox.runtime import NETWORK, existing_sandbox_key

    key = existing_sandbox_key(state_dir())
    if key is None:
        fail(
            "no configuration file found, and no sandbox has run here yet",
            EXIT_USAGE,
            "Pass --xpub KEY, --config PATH or set DASHPAY_CONFIG; or start "
            "`dashpay serve --sandbox` once, which creates the sandbox's key.",
        )
    return key, NETWORK, None, f"the sandbox's key ({state_dir() / SANDBOX_KEY_NAME})"


@wallet_app.command("derive")
def wallet_derive(
    ctx: typer.Context,
    xpub: str | None = typer.Option(
        None, "--xpub", help="Extended public key (default: config, else the sandbox's key)."
    ),
    network: str | None = typer.Option(
        None,
        "--network",
        help="mainnet or testnet (default: the one a tpub/drkv/DRKV key names, else config).",
    ),
    chain: int | None = typer.Option(None, "--chain", help="Chain (default: config, else 0)."),
    start: int = typer.Option(0, "--start", help="First index."),
    count: int = typer.Option(10, "--count", help="How many addresses (1-10000)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Derive addresses offline, to check them against your wallet."""
    json_errors(as_json)
    from dashpay.domain.wallet import (
        NETWORKS,
        Wallet,
        WalletKeyError,
        check_key_network,
        decode_extended_public_key,
    )

    if network is not None and network not in NETWORKS:
        fail(f"--network must be mainnet or testnet, got {network!r}", EXIT_USAGE)
    configured, source = None, "--xpub"
    if xpub is None:
        xpub, configured, configured_chain, source = _derive_source(ctx.obj)
        chain = configured_chain if chain is None else chain
    chain = 0 if chain is None else chain
    if not 0 <= chain < 2**31:
        fail(f"--chain must be from 0 to {2**31 - 1}", EXIT_USAGE)
    if not 1 <= count <= 10_000:
        fail("--count must be from 1 to 10000", EXIT_USAGE)
    if not start >= 0 or start + count > 2**31:
        fail(f"--start must be from 0 to {2**31 - count}", EXIT_USAGE)
    try:
        key = decode_extended_public_key(xpub)
        if network is not None:
            check_key_network(key, network, network_flag="--network")
        network = network or key.network_hint or configured
        if network is None:
            fail(
                f"--network is required with an {key.prefix} key: it is used on both "
                "networks (pass --network mainnet or --network testnet)",
                EXIT_USAGE,
            )
        wallet = Wallet(key, network, chain)
        addresses = wallet.addresses(start, count)
    except (WalletKeyError, ValueError) as exc:
        fail(f"{exc} [key from {source}]", EXIT_USAGE)
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
                "key_source": source,
                "addresses": rows,
            }
        )
    else:
        if source.startswith("the sandbox"):
            print(f"dashpay: no configuration file found: deriving from {source}", file=sys.stderr)
        for row in rows:
            print(f"{row['path']}\t{row['address']}")


@config_app.command("check")
def config_check(
    ctx: typer.Context,
    path: str | None = typer.Argument(
        None, metavar="[PATH]", help="Config file (default: --config, then the usual lookup)."
    ),
    unit: str | None = typer.Option(
        None,
        "--unit",
        help="The service's systemd unit: check the files as its User= and read its "
        "LoadCredential= (default: the installed dashpay.service, if any).",
    ),
) -> None:
    """Validate a config file offline; exit 2 with the problem if it is wrong."""
    import os
    import sys

    from dashpay.config.errors import ConfigError
    from dashpay.config.files import resolve_config_path
    from dashpay.config.load import config_warnings, load_config
    from dashpay.config.secrets import OfflineCheck
    from dashpay.config.unit import check_service_reads, installed_unit, read_unit, root_cannot_tell

    try:
        found, source = (
            resolve_config_path(path, given_by="the PATH argument")
            if path
            else resolve_config_path(ctx.obj.config)
        )
        if found is None:
            fail(
                "no configuration file found (pass a path, --config or set DASHPAY_CONFIG)",
                EXIT_USAGE,
            )
        unit_path = Path(unit) if unit else installed_unit()
        service = read_unit(unit_path) if unit_path is not None else None
        offline = OfflineCheck(
            credentials=service.credentials if service is not None else None, unit=unit_path
        )
        config = load_config(found, offline=offline)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    if config.wallet is None:
        fail(f"{found}: [wallet] xpub is required to run the daemon", EXIT_USAGE)
    cautions = config_warnings(config)
    notes = offline.notes
    if service is not None:
        reads = check_service_reads(found, offline.read, service)
        if reads.errors:
            fail("\ndashpay: error: ".join(map(str, reads.errors)), EXIT_USAGE)
        cautions += reads.cautions
        if reads.checked_as is not None:
            notes.insert(0, f"files checked as {reads.checked_as} would read them")
    elif os.geteuid() == 0:
        cautions.append(root_cannot_tell(found, offline.read))
    print(
        f"{found}: ok (wallet {config.wallet.network}, chain {config.wallet.chain}; "
        f"database {config.database.display_url()}; socket {config.control.socket})"
    )
    for note in notes:
        print(f"note: {note}")
    for caution in cautions:
        print(f"dashpay: warning: {caution}", file=sys.stderr)


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
        fail_on(exc)
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
        fail_on(exc)
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


def _asks_json(argv: list[str]) -> bool:
    """Whether the command line gives --json (before any ``--``, after which a word is
    an argument)."""
    words = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in words


def _run_with_json_usage_errors() -> NoReturn:
    """Run the app so that what its parser refuses (an unknown option, a missing
    argument, a value of the wrong type) is reported like every other error of a --json
    command: one JSON object on stderr, exit 2, stdout empty."""
    # click's UsageError and ClickException, found from a class typer exports: typer
    # < 0.28 re-exports click's, later ones vendor click as a private module.
    bases = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
    usage_error, click_exception = bases["UsageError"], bases["ClickException"]
    try:
        code = app(standalone_mode=False)
    except usage_error as exc:
        hint = None
        if exc.ctx is not None:
            hint = f"{exc.ctx.get_usage()}\nSee `{exc.ctx.command_path} --help`."
        json_errors(True)
        try:
            fail(exc.format_message(), EXIT_USAGE, hint)
        except typer.Exit as stop:
            raise SystemExit(stop.exit_code) from None
    except click_exception as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def main() -> None:
    try:
        if _asks_json(sys.argv[1:]):
            _run_with_json_usage_errors()
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:  # noqa: BLE001 - a bug in the CLI: say so, exit 7, not 1
        internal_error(exc)


__all__ = ["app", "main", "EXIT_REJECTED"]
