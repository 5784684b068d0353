"""dashd's JSON-RPC over HTTP: the lookups half of the dashd backend (``net/dashd.py``
adds the ZMQ watcher), over the project's HTTP/1.1 client (``net/http_post.py``), so
``[network] proxy`` and ``[tls] ca_file`` apply as to every client.

Credentials: dashd's cookie file, read at the first call and again after each 401
(dashd writes a new cookie at every start), or an rpcauth user and password. History
uses the address index when dashd has it (``getaddresstxids`` + ``getaddressmempool``,
then ``getrawtransaction`` per tx for its locks and confirmations); when the index is
off (-32600 with HTTP 400 on Dash Core 22+, -5 before) it says so once in the log and
falls back to ``scantxoutset`` with ``addr(...)`` descriptors, which sees only UNSPENT
outputs of mined transactions: a payment already spent onwards, or still in the
mempool, is not in that history (a mempool payment still arrives live as ``rawtx``, and
``tx`` lookups, which decide absence, find both).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from dashpay.domain.observations import SourceError, TxObserved
from dashpay.net.http_post import HttpPoster, HttpPostError, configured_addresses, describe_error
from dashpay.net.outbound import Outbound, default_outbound, with_trust_hint
from dashpay.wire import dashd_rpc as rpc
from dashpay.wire.insight import ADDRESS
from dashpay.wire.insight_rest import show

log = logging.getLogger("dashpay.dashd")

# RPC calls in flight at once (dashd's default rpcthreads is 4; queued ones wait there).
RPC_CONCURRENCY = 8
# Addresses per address-index call and per scantxoutset (dashd_rpc caps a call at 1,000).
HISTORY_BATCH = 1000
# getrawtransaction calls per JSON-RPC batch (one HTTP request) when reading a history.
TX_BATCH = 50
MAX_RPC_BODY = 64 * 1024 * 1024
# dashd answers -5 for a txid it does not know.
NOT_FOUND = rpc.RPC_INVALID_ADDRESS_OR_KEY


class DashdError(SourceError):
    """dashd gave no usable answer; the text says which call and why (no credentials)."""


class DashdAuthError(DashdError):
    """dashd refused the RPC credentials (HTTP 401/403)."""


class DashdMalformed(DashdError):
    """An answer that is not dashd's documented shape."""


class WrongNetwork(DashdError):
    """The node serves another network than the wallet's."""


def check_rpc_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``[dashd] rpc_url``; ValueError says what to fix."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"dashd rpc_url {url!r} is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise ValueError("dashd rpc_url must not carry credentials: use rpc_cookie_file")
    return scheme, parts.hostname, parts.port or (443 if scheme == "https" else 9998)


def check_zmq_url(url: str) -> str:
    """``[dashd] zmq_url``, a ZMQ tcp endpoint with a port; ValueError otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme != "tcp" or not parts.hostname:
        raise ValueError(f"dashd zmq_url {url!r} is not tcp://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or parts.path not in ("", "/"):
        raise ValueError(f"dashd zmq_url {url!r} is not tcp://HOST:PORT")
    return url.strip().rstrip("/")


class DashdRpc:
    """The lookups (``ChainLookups``) of one dashd; see the module docstring."""

    def __init__(
        self,
        rpc_url: str,
        *,
        network: str,
        cookie_file: Path | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        outbound: Outbound | None = None,
    ) -> None:
        self._scheme, self._host, self._port = check_rpc_url(rpc_url)
        if (cookie_file is None) == (user is None or password is None):
            raise ValueError("give the cookie file or a user and password, one of the two")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.rpc_url = rpc_url.strip().rstrip("/") + "/"
        self.network = network
        self._cookie_file = cookie_file
        self._auth: str | None = None if user is None else self._basic(f"{user}:{password}")
        self._timeout = timeout
        self._outbound = outbound or default_outbound()
        self._http = HttpPoster(
            self._addresses,
            outbound=self._outbound,
            max_body=MAX_RPC_BODY,
            body_seconds=timeout,
            max_idle_per_origin=RPC_CONCURRENCY,
        )
        self._limiter = trio.CapacityLimiter(RPC_CONCURRENCY)
        self._scan_lock = trio.Lock()  # dashd runs one scantxoutset at a time
        self._ids = 0
        self.tip_height: int | None = None
        self.address_index: bool | None = None  # None until known
        self._index_warned = False  # the fallback's limits are logged once
        self.requests_made = 0

    @staticmethod
    def _basic(credentials: str) -> str:
        return "Basic " + base64.b64encode(credentials.encode()).decode()

    def _read_cookie(self) -> str:
        assert self._cookie_file is not None
        try:
            with open(self._cookie_file, "rb") as handle:
                cookie = handle.read(4096).decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise DashdAuthError(
                f"dashd cookie file {self._cookie_file} cannot be read "
                f"({getattr(exc, 'strerror', None) or exc}): is dashd running, and may "
                "dashpay's user read it (the data directory and the file, by group)?"
            ) from None
        if ":" not in cookie:
            raise DashdAuthError(f"dashd cookie file {self._cookie_file} is not user:password")
        return self._basic(cookie)

    async def _addresses(self, host: str, port: int) -> list[str]:
        return await configured_addresses(self._outbound, self._scheme, host, port)

    async def _post(self, method: str, body: bytes, auth: str) -> tuple[int, bytes]:
        headers = [
            ("Authorization", auth),
            ("Content-Type", "application/json"),
            ("Accept-Encoding", "identity"),
        ]
        async with self._limiter:
            self.requests_made += 1
            with trio.move_on_after(self._timeout) as scope:
                response = await self._http.post(self.rpc_url, headers, body)
        if scope.cancelled_caught:
            raise DashdError(f"dashd {method}: no answer within {self._timeout:g}s")
        if not response.complete:
            raise DashdError(f"dashd {method}: the answer was cut short")
        return response.status, response.body

    async def call(self, method: str, build: Callable[[int], bytes]) -> Any:
        """One RPC call: ``build(request_id)`` gives the body. Errors are DashdError
        (``_RpcFailed`` with dashd's code for its own error answers) or, from the
        address calls, ``rpc.AddressIndexDisabled``."""
        self._ids += 1
        status, answer = await self._exchange(method, build(self._ids))
        try:
            return rpc.read_response(method, status, answer)
        except rpc.AddressIndexDisabled:
            raise
        except rpc.RpcError as exc:
            raise _RpcFailed(str(exc), exc.code) from exc
        except rpc.RpcMalformed as exc:
            raise DashdMalformed(f"{exc} ({show(answer[:200].decode('latin-1'))})") from None

    async def _exchange(self, method: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` with the credentials; a 401 with the cookie re-reads it once."""
        for attempt in (1, 2):
            if self._auth is None:  # the cookie, read off the trio thread (a file read)
                self._auth = await trio.to_thread.run_sync(self._read_cookie)
            try:
                status, answer = await self._post(method, body, self._auth)
            except (HttpPostError, OSError, ValueError) as exc:
                detail = str(exc) if isinstance(exc, HttpPostError) else describe_error(exc)
                detail = with_trust_hint(detail)
                raise DashdError(f"dashd {method} ({self.rpc_url}): {detail}") from None
            if status not in (401, 403):
                return status, answer
            if self._cookie_file is not None and attempt == 1:
                self._auth = None  # dashd restarted: a new cookie
                continue
            hint = (
                f"check that {self._cookie_file} is the cookie of the dashd at {self.rpc_url}"
                if self._cookie_file is not None
                else "check [dashd] rpc_user and rpc_password_file against dash.conf's rpcauth"
            )
            raise DashdAuthError(
                f"dashd {method}: the RPC credentials were refused (HTTP {status}); {hint}"
            )
        raise AssertionError("unreachable")

    async def _verbose_txs(self, txids: list[str]) -> dict[str, Any]:
        """``getrawtransaction txid true`` of many txids in one JSON-RPC batch: txid ->
        the result, or the ``rpc.RpcError`` dashd answered for it."""
        first = self._ids + 1
        self._ids += len(txids)
        ids = list(range(first, first + len(txids)))
        body = rpc.batch_body(
            [rpc.getrawtransaction(i, t) for i, t in zip(ids, txids, strict=True)]
        )
        status, answer = await self._exchange("getrawtransaction", body)
        try:
            results = rpc.read_batch("getrawtransaction", status, answer, ids)
        except rpc.RpcError as exc:
            raise _RpcFailed(str(exc), exc.code) from exc
        except rpc.RpcMalformed as exc:
            raise DashdMalformed(str(exc)) from None
        return {txid: results[i] for i, txid in zip(ids, txids, strict=True)}

    async def check_network(self) -> rpc.ChainInfo:
        """``getblockchaininfo``: the node must be on the wallet's network."""
        info = await self._chain_info()
        if info.network != self.network:
            raise WrongNetwork(
                f"the dashd at {self.rpc_url} is on {info.network}, the wallet on "
                f"{self.network}: point [dashd] rpc_url and zmq_url at a {self.network} node "
                "(or fix [wallet] network)"
            )
        return info

    async def _chain_info(self) -> rpc.ChainInfo:
        result = await self.call("getblockchaininfo", rpc.getblockchaininfo)
        try:
            info = rpc.parse_blockchaininfo(result)
        except rpc.RpcMalformed as exc:
            raise DashdMalformed(str(exc)) from None
        self.tip_height = info.blocks
        return info

    async def best_height(self) -> int | None:
        return (await self._chain_info()).blocks

    async def tx(self, txid: str) -> TxObserved | None:
        """``getrawtransaction txid true``: outputs, ``instantlock`` (InstantSend or
        ChainLock), confirmations; None when dashd does not know the txid (-5)."""
        wanted = txid.lower()
        try:
            result = await self.call(
                "getrawtransaction", lambda i: rpc.getrawtransaction(i, wanted)
            )
        except _RpcFailed as exc:
            if exc.code == NOT_FOUND:
                return None
            raise
        try:
            verbose = rpc.parse_verbose_tx(result, self.network)
        except rpc.RpcMalformed as exc:
            raise DashdMalformed(f"dashd getrawtransaction {wanted}: {exc}") from None
        if verbose.observed.txid != wanted:
            raise DashdError(f"dashd getrawtransaction {wanted}: answered another tx")
        return verbose.observed

    async def address_history(
        self, addresses: Sequence[str], *, skipped: set[str] | None = None
    ) -> list[TxObserved]:
        """Every tx the node can show for ``addresses`` (see the module docstring for
        what ``scantxoutset`` cannot see), each read with ``getrawtransaction``."""
        for address in addresses:
            if not isinstance(address, str) or not ADDRESS.fullmatch(address):
                raise ValueError(f"{show(address)} is not a Dash address")
        wanted = list(dict.fromkeys(addresses))
        txids: dict[str, None] = {}
        for start in range(0, len(wanted), HISTORY_BATCH):
            batch = wanted[start : start + HISTORY_BATCH]
            txids.update(dict.fromkeys(await self._history_txids(batch)))
        results: dict[str, TxObserved] = {}
        failures: list[Exception] = []

        async def batch(txids: list[str]) -> None:
            try:
                answers = await self._verbose_txs(txids)
            except DashdError as exc:
                failures.append(exc)
                return
            for txid, result in answers.items():
                if isinstance(result, rpc.RpcError):
                    if result.code != NOT_FOUND:  # -5: gone meanwhile, absent
                        failures.append(_RpcFailed(str(result), result.code))
                    continue
                try:
                    tx = rpc.parse_verbose_tx(result, self.network).observed
                except rpc.RpcMalformed as exc:
                    log.warning("dashd history item unreadable txid=%s: %s", txid, exc)
                    if skipped is not None:
                        skipped.add(txid)
                    continue
                if tx.txid != txid:
                    log.warning("dashd history item txid=%s answered another tx", txid)
                    if skipped is not None:
                        skipped.add(txid)
                    continue
                results[txid] = tx

        listed = list(txids)
        async with trio.open_nursery() as nursery:
            for start in range(0, len(listed), TX_BATCH):
                nursery.start_soon(batch, listed[start : start + TX_BATCH])
        if failures:
            raise failures[0]
        return [results[t] for t in listed if t in results]

    async def _history_txids(self, batch: list[str]) -> list[str]:
        if self.address_index is not False:
            try:
                mined = await self.call("getaddresstxids", lambda i: rpc.getaddresstxids(i, batch))
                pool = await self.call(
                    "getaddressmempool", lambda i: rpc.getaddressmempool(i, batch)
                )
                found = rpc.parse_txids(mined) + [d.txid for d in rpc.parse_address_mempool(pool)]
            except rpc.AddressIndexDisabled:
                self.address_index = False
                if not self._index_warned:
                    self._index_warned = True
                    log.warning(
                        "dashd has no address index (addressindex=1 in dash.conf, then a "
                        "reindex): rescans use scantxoutset, which sees only UNSPENT outputs "
                        "of mined transactions: a payment already spent onwards, or still in "
                        "the mempool, is not found by a rescan (live rawtx notifications "
                        "still are)"
                    )
            except rpc.RpcMalformed as exc:
                raise DashdMalformed(str(exc)) from None
            else:
                if self._index_warned and self.address_index is not True:
                    log.info("dashd has its address index now: rescans see every payment")
                self.address_index = True
                return list(dict.fromkeys(found))
        return await self._scan_txids(batch)

    async def _scan_txids(self, batch: list[str]) -> list[str]:
        async with self._scan_lock:
            result = await self.call("scantxoutset", lambda i: rpc.scantxoutset(i, batch))
        try:
            scan = rpc.parse_scantxoutset(result)
        except rpc.RpcMalformed as exc:
            raise DashdMalformed(str(exc)) from None
        return list(dict.fromkeys(u.txid for u in scan.unspents))

    async def aclose(self) -> None:
        await self._http.aclose()


class _RpcFailed(DashdError):
    """dashd's own error answer (``code``), other than a missing address index."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
