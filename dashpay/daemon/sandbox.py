"""`dashpay serve --sandbox`: the daemon against the built-in simulated network.

The composition lives here, above both: the daemon runs the sandbox's Insight server
in its own nursery and hands the sandbox's commands their runtime. The sandbox's chain
lives in its state directory (``sandbox/state.py``).
"""

from __future__ import annotations

import logging

import trio

from dashpay.config import paths
from dashpay.config.model import Config
from dashpay.daemon.root import Daemon, run_main
from dashpay.sandbox.runtime import NETWORK, SandboxRuntime, sandbox_config, with_sandbox_insight
from dashpay.sandbox.state import SandboxState, lock_state, open_network

log = logging.getLogger("dashpay.sandbox")


def run_sandbox_daemon(config: Config | None, *, socket: str | None = None) -> int:
    if config is not None and (config.wallet is None or config.wallet.network != NETWORK):
        log.error(
            '%s: --sandbox simulates testnet; set [wallet] network = "testnet" with a '
            "tpub/DRKV/xpub testnet key, or drop --config to use the embedded defaults",
            config.path,
        )
        return 2
    state = SandboxState(paths.state_dir())

    async def main() -> int:
        from dashpay.sandbox.server import serve_sandbox

        state.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = lock_state(state)
        try:
            network = open_network(state)
            log.info(
                "sandbox state directory: %s (chain %s); `dashpay sandbox reset` starts over",
                state.directory,
                state.chain_file.name,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(network.run)
                port = await nursery.start(serve_sandbox, network)
                if config is None:
                    cfg = sandbox_config(state.directory, port, socket)
                else:
                    cfg = with_sandbox_insight(config, port, socket)
                log.info("sandbox insight listening url=%s", cfg.insight.url)
                daemon = Daemon(cfg, sandbox=SandboxRuntime(network, cfg.insight.url))
                await daemon.run()
                nursery.cancel_scope.cancel()
        finally:
            lock.release()
        return daemon.exit_code

    return run_main(main)
