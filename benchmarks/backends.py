"""backends: the same work through each chain backend, in one run.

One daemon, database and N pending receivers (synthetic testnet addresses) behind each
backend, with the peer served from a thread of the harness process over one sandbox
chain: Insight (the sandbox's insight-api routes and socket.io, ``POST /addrs/txs`` of
100 addresses a request) or Blockbook (``dashpay/sandbox/blockbook.py``: one
``getAccountInfo`` per address, 64 in flight on one websocket), or a dashd
(``tests/dashd_peer.py``, its own chain of real serialized txs: each payment a ``rawtx``
on a real ZMQ PUB socket, lookups over JSON-RPC; rescans ``getaddresstxids`` +
``getaddressmempool`` per 1,000 addresses with the address index on).

- ``rescan``: `dashpay rescan --all-pending` of 10k receivers with empty histories (as
  most pending receivers are); ``rescan_seconds`` is the daemon's own duration of the
  pass, ``ready_seconds`` spawn to ready (which includes the first full rescan).
- ``record``: 1,000 payments, each paying one receiver its amount, made as one burst
  on the chain (each pushed as a ``tx`` event / an address notification); the rate is
  1,000 over the time from the first payment to the last outbox row (the engine's
  event log line, after the commit), checked in the database. Each payment is read
  back through the backend's lookups before it counts (services/verify.py), so this is
  ingest + read-back + record per backend.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.harness import (
    UNREACHABLE_INSIGHT,
    BenchError,
    DaemonProcess,
    database,
    query_one,
    run_cli,
    workdir,
    write_config,
)
from benchmarks.runner import Case, Options
from benchmarks.seed import AMOUNT_DUFFS, prepare, receivers_to_pay
from benchmarks.stack import READY_SECONDS_BASE, READY_SECONDS_PER_RECEIVER, wallet_id

DESCRIPTION = "rescan of 10k receivers and a burst of 1,000 payments, per chain backend"
SHOWN = ("rescan_seconds", "receivers_per_second", "payments_per_second", "ready_seconds")
REPORT_EXTRA = ("receivers_per_second", "payments_per_second")
UNITS = {
    "rescan_seconds": "s",
    "receivers_per_second": "/s",
    "payments_per_second": "/s",
    "ready_seconds": "s",
}
NOTES = [
    "The peer runs in a thread of the harness process (both backends alike) and shares "
    "the machine's two cores with the daemon; compare the backends within one run.",
]
BACKENDS = ("insight", "blockbook", "dashd")
SECONDS_PER_PAYMENT_LIMIT = 0.05


def cases(options: Options) -> list[Case]:
    pending, payments = (200, 50) if options.quick else (10_000, 1_000)
    size = f"{pending // 1000}k" if pending >= 1000 else str(pending)
    out = []
    for backend in BACKENDS:
        rescan = {"backend": backend, "work": "rescan", "pending": pending}
        record = {"backend": backend, "work": "record", "pending": pending, "payments": payments}
        out.append(Case(f"{backend} rescan, {size} pending", rescan))
        out.append(Case(f"{backend} record, {payments} payments", record))
    return out


class DashdThreadPeer:
    """``tests/dashd_peer.py``'s dashd (its own trio thread) with ThreadPeer's interface."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        from tests.dashd_peer import DashdPeer

        # No lock delay, and a send queue that holds a burst (dashd's default is 1,000:
        # a burst past it is dropped, seen as a sequence gap, and costs a rescan).
        self.peer = DashdPeer(lock_delay=0, send_hwm=100_000)

        async def pay(outputs: list[tuple[str, int]], *, lock: bool) -> str:
            return await self.peer._pay(outputs, lock, False)

        self.network = SimpleNamespace(pay=pay)

    def sections(self) -> dict[str, dict[str, Any]]:
        return self.peer.sections(reconnect_initial="0.2s", reconnect_max="2s")

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.peer._call(fn, *args)

    def close(self) -> None:
        self.peer.close()


class ThreadPeer:
    """A sandbox chain served as Insight or Blockbook from a trio thread."""

    def __init__(self, backend: str) -> None:
        import trio

        self._trio = trio
        self.backend = backend
        self._started = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise BenchError(f"the {backend} peer did not start")

    async def _main(self) -> None:
        from functools import partial

        from dashpay.sandbox.blockbook import BlockbookServer
        from dashpay.sandbox.network import SandboxNetwork
        from dashpay.sandbox.server import serve_sandbox

        trio = self._trio
        self.network = SandboxNetwork(lock_delay=0)
        async with trio.open_nursery() as nursery:
            if self.backend == "insight":
                serve = partial(serve_sandbox, self.network, port=0, max_buffer=1_000_000)
                self.port = await nursery.start(serve)
            else:
                server = BlockbookServer(lambda: self.network)
                self.port = await nursery.start(server.serve, 0)
            self.token, self._stop = trio.lowlevel.current_trio_token(), trio.Event()
            self._started.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def sections(self) -> dict[str, dict[str, Any]]:
        fast = {"reconnect_initial": "0.2s", "reconnect_max": "2s"}
        if self.backend == "insight":
            url = f"http://127.0.0.1:{self.port}/insight-api"
            return {"chain": {"backend": "insight"}, "insight": {"url": url, **fast}}
        url = f"http://127.0.0.1:{self.port}"
        return {"chain": {"backend": "blockbook"}, "blockbook": {"url": url, **fast}}

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._trio.from_thread.run(fn, *args, trio_token=self.token)

    def close(self) -> None:
        self._trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join(10)


@contextlib.contextmanager
def backend_stack(backend: str, pending: int) -> Iterator[tuple[Any, ...]]:
    """(daemon, peer, database URL, ready seconds) for one backend."""
    with contextlib.ExitStack() as stack:
        directory = stack.enter_context(workdir())
        database_url = stack.enter_context(database("sqlite", directory, None))
        peer = DashdThreadPeer() if backend == "dashd" else ThreadPeer(backend)
        stack.callback(peer.close)
        config = write_config(directory, database_url, UNREACHABLE_INSIGHT, extra=peer.sections())
        prepare(config, database_url, wallet_id(), pending)
        daemon = DaemonProcess.start(config)
        stack.callback(daemon.stop)
        ready = daemon.wait_ready(READY_SECONDS_BASE + pending * READY_SECONDS_PER_RECEIVER)
        yield daemon, peer, database_url, ready


def _rescan(daemon: DaemonProcess, pending: int) -> dict[str, Any]:
    answer = json.loads(run_cli(daemon.config, "rescan", "--all-pending", "--json"))
    if answer["receivers_checked"] != pending or not answer["complete"]:
        raise BenchError(f"the rescan checked {answer['receivers_checked']} of {pending}")
    seconds = answer["duration_seconds"]
    return {
        "rescan_seconds": seconds,
        "receivers_per_second": round(pending / seconds) if seconds else None,
    }


def _record(daemon: DaemonProcess, peer: ThreadPeer, database_url: str, count: int) -> dict:
    targets = receivers_to_pay(database_url, count)
    ids = {receiver_id for receiver_id, _ in targets}
    time.sleep(1.0)  # let the ready daemon's follow-up work (tip, subscriptions) finish

    async def burst() -> float:
        started = time.monotonic()
        for _, address in targets:
            await peer.network.pay([(address, AMOUNT_DUFFS)], lock=False)
        return started

    started = peer.run(burst)
    limit = 30 + count * SECONDS_PER_PAYMENT_LIMIT
    daemon.wait_for(lambda: all(i in daemon.first_event for i in ids), limit, f"{count} events")
    done = max(daemon.first_event[i].at for i in ids)
    (payments,) = query_one(database_url, "SELECT COUNT(*) FROM payments")
    (paid,) = query_one(database_url, "SELECT COUNT(*) FROM receivers WHERE status = 'paid'")
    if (payments, paid) != (count, count):
        raise BenchError(f"expected {count} payments and paid receivers, found {payments}, {paid}")
    return {"payments": count, "payments_per_second": round(count / (done - started), 1)}


def run(case: Case, options: Options) -> dict[str, Any]:
    backend, pending = case.parameters["backend"], case.parameters["pending"]
    with backend_stack(backend, pending) as (daemon, peer, database_url, ready):
        if case.parameters["work"] == "rescan":
            measured = _rescan(daemon, pending)
        else:
            measured = _record(daemon, peer, database_url, case.parameters["payments"])
    return {"backend": backend, "pending": pending, "ready_seconds": round(ready, 3), **measured}
