"""The chain source: the one interface every backend (``[chain] backend``) offers the
daemon, so the payment engine, the rescans and the read-back never know which one runs.

A backend is two halves, bundled in a ``ChainSource``:

- a ``ChainWatcher`` pushes what happens into the engine's channel as the values of
  ``domain/observations.py`` (``TxObserved``, ``BlockObserved``, ``SocketConnected``
  after every (re)connect, so the daemon rescans, and ``SocketDisconnected``). It keeps
  its own connection(s) and retries for ever (``domain/backoff.ReconnectPolicy``), and
  drops (logs and counts) whatever hostile or malformed message it gets. A watcher that
  needs to know which addresses to watch (Blockbook subscribes per address; Insight and
  dashd's ZMQ send every tx) is told with ``track`` (the whole set, asked again at each
  connect and now and then) and ``watch`` (new ones, at once);
- ``ChainLookups`` reads the truth on demand: ``address_history`` (a rescan, the
  read-back of a claimed payment) and ``tx`` (confirmations, locks, absence). Both
  raise ``SourceError`` when they get no usable answer.

``settle_poll``: a backend that pushes no lock events (Blockbook) has the daemon look
its unsettled payments up every so many seconds, so a lock settles a receiver soon; a
backend that pushes them (Insight's ``txlock``, dashd's ZMQ) has None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from dashpay.config.keys import CHAIN_BACKENDS
from dashpay.config.model import Config
from dashpay.domain.observations import TxObserved
from dashpay.net.outbound import Outbound


class ChainLookups(Protocol):
    async def address_history(
        self, addresses: Sequence[str], *, skipped: set[str] | None = None
    ) -> list[TxObserved]:
        """Every tx touching ``addresses`` (mempool and mined), once each. A malformed
        item is skipped and its txid added to ``skipped`` ("" when unreadable): the
        caller must not judge those absent."""
        ...

    async def tx(self, txid: str) -> TxObserved | None:
        """One tx with its confirmations (and its lock where the backend can say), or
        None when the source does not know it (never seen, or dropped)."""
        ...

    async def best_height(self) -> int | None:
        """The height of the source's best block, None if it cannot say."""
        ...


class ChainWatcher(Protocol):
    # For `dashpay status`: "connecting" | "connected" | "disconnected", wall times.
    state: str
    connected_since: float | None
    disconnected_since: float | None
    last_event_at: float | None
    reconnects: int
    events_received: int
    events_rejected: int

    @property
    def display(self) -> str:
        """Where it connects, for logs and status: no credentials, no query."""
        ...

    async def run(self, send: trio.MemorySendChannel) -> None:
        """Connect, forward observations into ``send`` and reconnect, until cancelled."""
        ...

    def track(self, addresses: Callable[[], Iterable[str]]) -> None:
        """The whole watched set, asked for again at every (re)connect."""
        ...

    def watch(self, addresses: Iterable[str]) -> None:
        """Addresses just added to the watched set."""
        ...


@dataclass(slots=True)
class ChainSource:
    backend: str  # one of config.keys.CHAIN_BACKENDS
    url: str  # the configured base URL, for status
    lookups: ChainLookups
    watcher: ChainWatcher
    # How the lookups are named in logs and messages ("Insight REST", "Blockbook",
    # "dashd RPC").
    lookup_name: str
    # Concurrent `tx` lookups while checking confirmations or absences.
    lookup_concurrency: int
    # Seconds between lock polls of unsettled payments; None: the watcher pushes locks.
    settle_poll: float | None = None
    tip_height: int | None = None  # last known, for status (the watcher's if it has one)
    # Addresses per read-back request (services/verify.py), the batches read side by
    # side and each recorded as soon as it is read; None: all of them in one call.
    readback_batch: int | None = None

    @property
    def name(self) -> str:
        """The backend as people call it, in messages: "Insight", "Blockbook"."""
        return CHAIN_BACKENDS.get(self.backend, self.backend)

    def known_tip(self) -> int | None:
        height = getattr(self.watcher, "tip_height", None)
        return height if height is not None else self.tip_height


# Blockbook pushes no locks: with a poll every 5 s and the read-back before it, a lock
# settles a receiver within 15 s (the target).
BLOCKBOOK_SETTLE_POLL = 5.0
# Insight REST allows few requests in flight (a rate limit of 10,800 per 3 hours);
# Blockbook answers many requests on one websocket.
INSIGHT_LOOKUPS = 8
BLOCKBOOK_LOOKUPS = 64
# dashd serves RPC with a few threads (rpcthreads, 4 by default) and queues the rest.
DASHD_LOOKUPS = 16


def open_chain_source(config: Config, network: str, outbound: Outbound) -> ChainSource:
    """The backend ``[chain] backend`` names, not yet connected (``watcher.run`` does);
    every connection it makes leaves through ``outbound`` (proxies, trust store)."""
    backend = config.chain.backend
    if backend == "insight":
        from dashpay.net.insight_rest import MAX_ADDRESS_BATCH, MAX_PAGE_SIZE, InsightRest
        from dashpay.net.insight_socket import InsightSocket

        insight = config.insight
        # The widest address batch Insight takes: a rescan of N receivers with no
        # history costs N/1000 requests, not N/100 (issue 19: startup CPU per receiver).
        rest = InsightRest(
            insight.url, timeout=insight.timeout, address_batch=MAX_ADDRESS_BATCH,
            outbound=outbound,
        )  # fmt: skip
        socket = InsightSocket(
            insight.effective_socket_url,
            reconnect_initial=insight.reconnect_initial,
            reconnect_max=insight.reconnect_max,
            outbound=outbound,
        )
        # A read-back reads addresses that each claim a tx, so one page's worth of them
        # is usually one request: Insight looks up every address of a request for each
        # of its pages, and a burst's 1,000 read in one batch made it do so 20 times.
        return ChainSource(
            backend, insight.url, rest, socket, "Insight REST", INSIGHT_LOOKUPS,
            readback_batch=MAX_PAGE_SIZE,
        )  # fmt: skip
    if backend == "blockbook":
        from dashpay.net.blockbook import BlockbookClient

        blockbook = config.blockbook
        assert blockbook.url is not None  # the loader requires it for this backend
        client = BlockbookClient(
            blockbook.websocket_url,
            network=network,
            timeout=blockbook.timeout,
            reconnect_initial=blockbook.reconnect_initial,
            reconnect_max=blockbook.reconnect_max,
            outbound=outbound,
        )
        return ChainSource(
            backend,
            blockbook.url,
            client,
            client,
            "Blockbook",
            BLOCKBOOK_LOOKUPS,
            settle_poll=BLOCKBOOK_SETTLE_POLL,
        )
    if backend == "dashd":
        from dashpay.net.dashd import DashdClient

        dashd = config.dashd
        assert dashd.rpc_url is not None and dashd.zmq_url is not None  # the loader's checks
        node = DashdClient(
            dashd.rpc_url,
            dashd.zmq_url,
            network=network,
            cookie_file=dashd.rpc_cookie_file,
            user=dashd.rpc_user,
            password=dashd.rpc_password,
            timeout=dashd.timeout,
            reconnect_initial=dashd.reconnect_initial,
            reconnect_max=dashd.reconnect_max,
            outbound=outbound,
        )
        return ChainSource(backend, dashd.rpc_url, node, node, "dashd RPC", DASHD_LOOKUPS)
    raise NotImplementedError(f'[chain] backend "{backend}" is not implemented')
