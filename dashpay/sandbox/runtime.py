"""`dashpay serve --sandbox`: the daemon on embedded defaults against a simulated
network served in-process over the real Insight protocol.

Everything lives in one state directory ($XDG_STATE_HOME/dashpay or
~/.local/state/dashpay): the SQLite database, the control socket and a testnet
account key generated at first start (public only; the seed is discarded).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import trio

from dashpay.api import methods
from dashpay.config import paths
from dashpay.config.control import ControlConfig
from dashpay.config.database import parse_database_url
from dashpay.config.load import default_config
from dashpay.config.model import Config, WalletConfig
from dashpay.domain.errors import InvalidParams
from dashpay.domain.money import AmountError, dash_to_duffs

log = logging.getLogger("dashpay.sandbox")
NETWORK = "testnet"


def sandbox_key(state: Path) -> str:
    """The sandbox wallet's account key, created at first start and kept."""
    from dashpay.domain.wallet import generate_account_key

    key_file = state / paths.SANDBOX_KEY_NAME
    if key_file.exists():
        return key_file.read_text().strip()
    key = generate_account_key(NETWORK)
    tmp = key_file.with_suffix(".tmp")
    tmp.write_text(key + "\n")
    os.replace(tmp, key_file)
    return key


def sandbox_prices(config: Config, insight_port: int) -> Any:
    """Prices from the sandbox server's fixed CoinGecko-shaped route: no traffic leaves
    the machine, and fiat receivers can be tried."""
    from dashpay.sandbox.server import SANDBOX_PRICE_PREFIX

    return dataclasses.replace(
        config.prices,
        providers=("coingecko",),
        coingecko=f"http://127.0.0.1:{insight_port}{SANDBOX_PRICE_PREFIX}",
    )


def sandbox_config(state: Path, insight_port: int, socket: str | None = None) -> Config:
    base = default_config()
    return dataclasses.replace(
        base,
        prices=sandbox_prices(base, insight_port),
        wallet=WalletConfig(xpub=sandbox_key(state), network=NETWORK),
        database=parse_database_url(f"sqlite:///{state / paths.SANDBOX_DB_NAME}"),
        control=ControlConfig(socket=Path(socket) if socket else state / paths.SANDBOX_SOCKET_NAME),
        insight=dataclasses.replace(
            base.insight, url=f"http://127.0.0.1:{insight_port}/insight-api", socket_url=None
        ),
    )


def with_sandbox_insight(config: Config, insight_port: int, socket: str | None) -> Config:
    """A merchant's own config, pointed at the in-process sandbox network."""
    control = config.control
    if socket:
        control = dataclasses.replace(control, socket=Path(socket))
    return dataclasses.replace(
        config,
        control=control,
        prices=sandbox_prices(config, insight_port),
        insight=dataclasses.replace(
            config.insight, url=f"http://127.0.0.1:{insight_port}/insight-api", socket_url=None
        ),
    )


class SandboxRuntime:
    """The sandbox's control methods (they exist only in sandbox mode)."""

    def __init__(self, network: Any, insight_url: str) -> None:
        self.network = network
        self.insight_url = insight_url

    def handlers(self) -> dict[str, Any]:
        return {
            methods.SANDBOX_PAY: self.pay,
            methods.SANDBOX_MINE: self.mine,
            methods.SANDBOX_DROP: self.drop,
            methods.SANDBOX_LOCK: self.lock,
        }

    async def pay(self, params: dict[str, Any]) -> dict[str, Any]:
        from dashpay.domain.wallet import AddressError, validate_address
        from dashpay.sandbox.chain import SandboxError

        _only(params, {"address", "amount", "lock", "silent"})
        try:
            address = validate_address(str(params.get("address", "")), NETWORK)
        except AddressError as exc:
            raise InvalidParams(f"address: {exc}") from None
        try:
            duffs = dash_to_duffs(params.get("amount"))
        except AmountError as exc:
            raise InvalidParams(str(exc)) from None
        lock, silent = _flag(params, "lock", True), _flag(params, "silent", False)
        try:
            result = await self.network.pay([(address, duffs)], lock=lock, silent=silent)
        except SandboxError as exc:
            raise InvalidParams(str(exc)) from None
        log.info("sandbox pay address=%s duffs=%d lock=%s silent=%s", address, duffs, lock, silent)
        return result

    async def mine(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, {"blocks"})
        blocks = params.get("blocks", 1)
        if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 <= blocks <= 1000:
            raise InvalidParams("blocks must be an integer from 1 to 1000")
        hashes = await self.network.mine(blocks)
        return {"blocks": hashes, "height": self.network.chain.height}

    async def drop(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._tx_action(params, self.network.drop, "dropped")

    async def lock(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._tx_action(params, self.network.lock, "locked")

    async def _tx_action(self, params: dict[str, Any], action, done: str) -> dict[str, Any]:
        from dashpay.sandbox.chain import SandboxError

        _only(params, {"txid"})
        txid = params.get("txid")
        if not isinstance(txid, str):
            raise InvalidParams("txid must be a string of 64 hex digits")
        try:
            await action(txid.strip().lower())
        except SandboxError as exc:
            raise InvalidParams(str(exc)) from None
        return {"txid": txid, done: True}


def _only(params: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidParams(f"unknown parameter(s): {', '.join(unknown)}")


def _flag(params: dict[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise InvalidParams(f"{name} must be true or false")
    return value


def run_sandbox_daemon(config: Config | None, *, socket: str | None = None) -> int:
    from dashpay.daemon.root import Daemon, run_main

    if config is not None:
        if config.wallet is None or config.wallet.network != NETWORK:
            log.error(
                '%s: --sandbox simulates testnet; set [wallet] network = "testnet" with a '
                "tpub/DRKV/xpub testnet key, or drop --config to use the embedded defaults",
                config.path,
            )
            return 2
        state = None
    else:
        state = paths.state_dir()
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        log.info("sandbox state directory: %s", state)

    async def main() -> int:
        from dashpay.sandbox.network import SandboxNetwork
        from dashpay.sandbox.server import serve_sandbox

        network = SandboxNetwork()
        async with trio.open_nursery() as nursery:
            await nursery.start(network.run)
            port = await nursery.start(serve_sandbox, network)
            if config is None:
                cfg = sandbox_config(state, port, socket)
            else:
                cfg = with_sandbox_insight(config, port, socket)
            log.info("sandbox insight listening url=%s", cfg.insight.url)
            daemon = Daemon(cfg, sandbox=SandboxRuntime(network, cfg.insight.url))
            await daemon.run()
            nursery.cancel_scope.cancel()
        return daemon.exit_code

    return run_main(main)
