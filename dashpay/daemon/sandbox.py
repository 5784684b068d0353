"""`dashpay serve --sandbox`: the daemon against the built-in simulated network.

The composition lives here, above both: the daemon runs the sandbox's Insight server
in its own nursery and hands the sandbox's commands their runtime. The sandbox's state
(database, chain, wallet key, control socket) lives in its own directory whether or not
a config file is given (``sandbox/state.py``, ``sandbox/runtime.py``).
"""

from __future__ import annotations

import logging

import trio

from dashpay.config import paths
from dashpay.config.model import Config
from dashpay.daemon.root import Daemon, run_main
from dashpay.sandbox.runtime import SandboxRuntime, sandbox_config
from dashpay.sandbox.state import SandboxState, lock_state, open_network

log = logging.getLogger("dashpay.sandbox")

# What a config file given with --sandbox is used for, and what never.
TAKEN_FROM_CONFIG = "[receivers] (but drop_after) and [logging]"
NOT_TAKEN = "[wallet], [database], [control], [insight], [prices]"


def run_sandbox_daemon(
    config: Config | None, *, socket: str | None = None, send_callbacks: bool = False
) -> int:
    """Run the sandbox daemon until SIGTERM/SIGINT; the process exit code.
    ``send_callbacks``: use the config's [callbacks] (only with a config)."""
    if send_callbacks and config is None:
        raise ValueError("send_callbacks needs a config")
    state = SandboxState(paths.state_dir())

    async def main() -> int:
        from dashpay.sandbox.server import serve_sandbox

        state.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = lock_state(state)
        try:
            network = open_network(state)
            async with trio.open_nursery() as nursery:
                await nursery.start(network.run)
                port = await nursery.start(serve_sandbox, network)
                cfg = sandbox_config(
                    state.directory, port, socket, config=config, send_callbacks=send_callbacks
                )
                _log_state(state, cfg, config, send_callbacks)
                log.info("sandbox insight listening url=%s", cfg.insight.url)
                daemon = Daemon(cfg, sandbox=SandboxRuntime(network, cfg.insight.url))
                await daemon.run()
                nursery.cancel_scope.cancel()
        finally:
            lock.release()
        return daemon.exit_code

    return run_main(main)


def _log_state(state: SandboxState, cfg: Config, config: Config | None, callbacks: bool) -> None:
    log.info(
        "sandbox state directory: %s (database %s, chain %s, wallet key %s; control socket "
        "%s); `dashpay sandbox reset` starts over",
        state.directory,
        state.database.name,
        state.chain_file.name,
        paths.SANDBOX_KEY_NAME,
        cfg.control.socket,
    )
    if config is not None:
        if callbacks:
            used, unused = f"{TAKEN_FROM_CONFIG} and [callbacks] (--send-callbacks)", NOT_TAKEN
        else:
            used = TAKEN_FROM_CONFIG
            unused = f"{NOT_TAKEN}, nor [callbacks] (pass --send-callbacks)"
        log.info("sandbox uses %s of %s, not its %s", used, config.path, unused)
