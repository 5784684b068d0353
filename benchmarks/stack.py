"""One benchmark run's set-up: a database with N pending receivers, the peer, a
callback receiver and `dashpay serve`, torn down in reverse order."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import (
    BENCH_XPUB,
    NETWORK,
    UNREACHABLE_INSIGHT,
    CallbackSink,
    DaemonProcess,
    Peer,
    database,
    open_peer,
    settle,
    workdir,
    write_config,
)
from benchmarks.runner import Case, Options
from benchmarks.seed import prepare, receivers_to_pay

# A rescan reads ~1,000 receivers per REST request; allow a generous 1 ms per receiver.
READY_SECONDS_PER_RECEIVER = 0.001
READY_SECONDS_BASE = 60.0
CHECKOUT_PUBLIC_URL = "https://pay.bench.invalid"


def wallet_id() -> str:
    from dashpay.domain.wallet import Wallet

    return Wallet(BENCH_XPUB, NETWORK).wallet_id


@dataclass
class Stack:
    directory: Path
    database_url: str
    config: Path
    daemon: DaemonProcess
    peer: Peer | None
    sink: CallbackSink | None
    ready_seconds: float | None
    http_url: str | None = None  # the HTTP API's base URL (``daemon_stack(http=True)``)


@contextlib.contextmanager
def daemon_stack(
    backend: str,
    pending: int,
    *,
    mysql_url: str | None,
    insight_url: str | None,
    callbacks: bool = False,
    with_insight: bool = True,
    wait_ready: bool = True,
    http: bool = False,
    checkout: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """A ready daemon (unless ``wait_ready`` is False) watching ``pending`` receivers.

    ``with_insight=False`` points the daemon at a closed port: it loads its pending
    table and answers `status` but never connects (no rescan traffic). ``checkout``:
    the HTTP API with the checkout page on (its public URL is only a name here).
    ``env``: variables added to the daemon's environment (``harness.bytecode_prefix``)."""
    http = http or checkout
    with contextlib.ExitStack() as stack:
        directory = stack.enter_context(workdir())
        database_url = stack.enter_context(database(backend, directory, mysql_url))
        peer = stack.enter_context(open_peer(insight_url)) if with_insight else None
        sink = CallbackSink() if callbacks else None
        if sink is not None:
            stack.callback(sink.close)
        config = write_config(
            directory,
            database_url,
            peer.insight_url if peer is not None else UNREACHABLE_INSIGHT,
            callback_url=sink.url if sink is not None else None,
            http=http,
            public_url=CHECKOUT_PUBLIC_URL if checkout else None,
        )
        prepare(config, database_url, wallet_id(), pending)
        daemon = DaemonProcess.start(config, env=env)
        stack.callback(daemon.stop)
        ready = None
        if wait_ready and with_insight:
            ready = daemon.wait_ready(READY_SECONDS_BASE + pending * READY_SECONDS_PER_RECEIVER)
            assert peer is not None
            peer.wait_subscribed()
        else:
            daemon.wait_control(READY_SECONDS_BASE + pending * READY_SECONDS_PER_RECEIVER)
        http_url = daemon.status()["http"]["urls"][0] if http else None
        yield Stack(directory, database_url, config, daemon, peer, sink, ready, http_url)


@contextlib.contextmanager
def paying_stack(
    case: Case, options: Options, payments: int
) -> Iterator[tuple[Stack, list[tuple[int, str]]]]:
    """For ``case`` (its ``backend`` and ``pending``): a ready daemon sending callbacks
    to the sink, and ``payments`` receivers to pay (receiver id, address; oldest
    first), after the settling pause."""
    with daemon_stack(
        case.parameters["backend"],
        case.parameters["pending"],
        mysql_url=options.mysql_url,
        insight_url=options.insight_url,
        callbacks=True,
    ) as stack:
        assert stack.peer is not None and stack.sink is not None
        targets = receivers_to_pay(stack.database_url, payments)
        settle(options.quick)
        yield stack, targets
