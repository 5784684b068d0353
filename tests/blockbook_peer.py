"""The sandbox chain behind a Blockbook websocket server, for tests.

``BlockbookPeer`` is ``SandboxPeer`` (the same chain, the same ``pay``/``mine``/``lock``/
``drop``/``server_down``/``restart_empty``) with ``dashpay/sandbox/blockbook.py``'s
server in front instead of Insight, so one suite of scenarios runs against both
backends; ``send_raw``, ``forge`` and ``hold_subscriptions`` play a hostile or slow
server.
"""

from __future__ import annotations

import trio

from dashpay.sandbox.blockbook import BlockbookServer, forged_tx
from tests.conftest import SandboxPeer


class BlockbookPeer(SandboxPeer):
    """The sandbox chain behind a Blockbook websocket server (see the module docstring)."""

    backend = "blockbook"

    async def _start_server(self) -> None:
        if not hasattr(self, "server"):
            self.server = BlockbookServer(lambda: self.network)
        scope_box: list = []

        async def server(task_status):
            with trio.CancelScope() as scope:
                scope_box.append(scope)
                await self.server.serve(self.port or 0, task_status=task_status)

        self.port = await self._nursery.start(server)
        self._server_scope = scope_box[0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hold_subscriptions(self) -> None:
        """Subscriptions are answered (and take effect) only after the release."""

        async def go():
            self.server.hold = trio.Event()

        self._call(go)

    def release_subscriptions(self) -> None:
        async def go():
            hold, self.server.hold = self.server.hold, None
            if hold is not None:
                hold.set()

        self._call(go)

    def send_raw(self, *texts: str) -> None:
        """Send every connection these websocket texts as they are (hostile peer)."""

        async def go():
            for text in texts:
                await self.server.broadcast(text)

        self._call(go)

    def forge(self, name: str, txid: str, outputs: dict[str, int], *, txlock: bool = False) -> None:
        """A notification for a tx the chain does not back, to every subscriber of its
        addresses (Blockbook has no txlock push: ``txlock`` only marks it)."""
        payload = {"txid": txid, "vout": [{a: d} for a, d in outputs.items()]}

        async def go():
            for client in list(self.server.clients):
                for address in sorted(set(outputs) & client.addresses):
                    tx = forged_tx(payload)
                    await client.send(
                        {"id": client.subscription_id, "data": {"address": address, "tx": tx}}
                    )

        self._call(go)
