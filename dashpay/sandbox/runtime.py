"""`dashpay serve --sandbox`: the daemon on embedded defaults against a simulated
network served in-process over the real Insight protocol.

Everything lives in one state directory ($XDG_STATE_HOME/dashpay or
~/.local/state/dashpay, see ``state.py``): the SQLite database, the chain, the control
socket and a testnet account key generated at first start (public only; the seed is
discarded). A merchant's config file never points the sandbox at anything real: its
database, socket, wallet (and so its HD counter) and Insight are not used, and its
callbacks only with ``--send-callbacks``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from dashpay.config import paths
from dashpay.config.control import ControlConfig
from dashpay.config.database import parse_database_url
from dashpay.config.load import default_config
from dashpay.config.model import Config, WalletConfig
from dashpay.domain.errors import InvalidParams

log = logging.getLogger("dashpay.sandbox")
NETWORK = "testnet"
# [receivers] drop_after in the sandbox (seconds): a `dashpay sandbox drop` is noticed by
# the re-check timer within a second and the payment dropped about this much later.
SANDBOX_DROP_AFTER = 5.0


def existing_sandbox_key(state: Path) -> str | None:
    """The sandbox wallet's account key if a sandbox has started in ``state``, else
    None (`dashpay wallet derive` reads it; it never makes one)."""
    key_file = state / paths.SANDBOX_KEY_NAME
    return key_file.read_text().strip() if key_file.exists() else None


def sandbox_key(state: Path) -> str:
    """The sandbox wallet's account key, created at first start and kept."""
    from dashpay.domain.wallet import generate_account_key

    key = existing_sandbox_key(state)
    if key is not None:
        return key
    key_file = state / paths.SANDBOX_KEY_NAME
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


def sandbox_config(
    state: Path,
    insight_port: int,
    socket: str | None = None,
    *,
    config: Config | None = None,
    send_callbacks: bool = False,
) -> Config:
    """The sandbox daemon's configuration: its own key, database and socket in ``state``,
    Insight and prices from the in-process network. Of a merchant's ``config`` it takes
    only what writes nothing elsewhere, [receivers] (expiry, tolerance, confirmations)
    and [logging]; with ``send_callbacks`` also [callbacks] (default_url, secret and
    delivery rules), so that its endpoint gets the sandbox's callbacks."""
    base = default_config()
    if config is not None:
        base = dataclasses.replace(base, receivers=config.receivers, logging=config.logging)
        if send_callbacks:
            base = dataclasses.replace(base, callbacks=config.callbacks)
    return dataclasses.replace(
        base,
        # A `sandbox drop` shows within seconds, whatever a config says.
        receivers=dataclasses.replace(base.receivers, drop_after=SANDBOX_DROP_AFTER),
        prices=sandbox_prices(base, insight_port),
        wallet=WalletConfig(xpub=sandbox_key(state), network=NETWORK),
        database=parse_database_url(f"sqlite:///{state / paths.SANDBOX_DB_NAME}"),
        control=ControlConfig(socket=Path(socket) if socket else state / paths.SANDBOX_SOCKET_NAME),
        insight=dataclasses.replace(
            base.insight, url=f"http://127.0.0.1:{insight_port}/insight-api", socket_url=None
        ),
        # The HTTP API on a free loopback port (its URL is logged and in `status`).
        http=dataclasses.replace(base.http, listen=("127.0.0.1:0",)),
    )


class SandboxRuntime:
    """The sandbox's control methods (they exist only in sandbox mode)."""

    def __init__(self, network: Any, insight_url: str) -> None:
        self.network = network
        self.insight_url = insight_url

    @staticmethod
    def price_providers(prices: Any) -> tuple[Any, ...]:
        """The price provider of a sandbox daemon: the fixed rate its own server answers
        (``sandbox_prices`` points the config there), under its own name ``sandbox``."""
        from dashpay.services.prices.providers import SandboxRate

        return (SandboxRate(prices.coingecko),)

    async def pay(self, address: Any, duffs: int, *, lock: bool, silent: bool) -> dict[str, Any]:
        from dashpay.domain.wallet import AddressError, validate_address
        from dashpay.sandbox.chain import SandboxError

        try:
            address = validate_address(str(address or ""), NETWORK)
        except AddressError as exc:
            raise InvalidParams(f"address: {exc}") from None
        try:
            result = await self.network.pay([(address, duffs)], lock=lock, silent=silent)
        except SandboxError as exc:
            raise InvalidParams(str(exc)) from None
        log.info("sandbox pay address=%s duffs=%d lock=%s silent=%s", address, duffs, lock, silent)
        return result

    async def mine(self, blocks: int) -> dict[str, Any]:
        hashes = await self.network.mine(blocks)
        return {"blocks": hashes, "height": self.network.chain.height}

    async def drop(self, txid: str) -> dict[str, Any]:
        from dashpay.services.rescan import recheck_interval

        result = await self._tx_action(txid, self.network.drop, "dropped")
        log.info(
            "sandbox drop txid=%s: the daemon notices within %.0fs and drops the payment "
            "after [receivers] drop_after (%.0fs in the sandbox)",
            txid,
            recheck_interval(int(SANDBOX_DROP_AFTER * 1000)),
            SANDBOX_DROP_AFTER,
        )
        return result

    async def lock(self, txid: str) -> dict[str, Any]:
        result = await self._tx_action(txid, self.network.lock, "locked")
        log.info("sandbox lock txid=%s", txid)
        return result

    async def _tx_action(self, txid: str, action, done: str) -> dict[str, Any]:
        from dashpay.sandbox.chain import SandboxError

        try:
            await action(txid)
        except SandboxError as exc:
            raise InvalidParams(str(exc)) from None
        return {"txid": txid, done: True}
