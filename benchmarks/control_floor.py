"""The control socket alone, for the create scenario's second floor: the daemon's own
`net/control_server.py` (``serve_control``, default limits) with a handler that answers
every request at once with a fixed receiver view (the shape `receiver.create` returns),
no service, writer, thread or database behind it.

`python -m benchmarks.control_floor SOCKET` prints "ready" once it listens and serves
until stdin closes. Its CPU per request is what any control request costs the process
(reading the line, JSON-RPC both ways, the trio tasks and the socket) before the
command does anything.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import trio

from dashpay.domain.model import NewReceiver
from dashpay.domain.views import receiver_view
from dashpay.net.control_server import serve_control
from dashpay.repository.sql import _created_receiver

NEW = NewReceiver(wallet_id="0123456789abcdef", chain=0, amount_duffs=10_000_000, created_at=1)
VIEW: dict[str, Any] = {
    **receiver_view(_created_receiver(1, 1, "y" + "1" * 33, NEW)),
    "checkout_url": None,
    "created": True,
}


async def answer(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return VIEW


async def main(path: Path) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_control, path, answer))
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the benchmark closes it
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]))
