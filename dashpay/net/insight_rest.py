"""Insight REST client: the daemon's way to read address histories, single txs, blocks
and ChainLocks from an Insight server (dashevo/insight-api on dashcore-node).

Why a module of its own: the socket only tells us about what happens while we are
connected, so bootstrap, every reconnect and ``dashpay rescan`` rebuild the truth from
REST. That path must be exact (money), bounded (a broken or hostile server must not make
us hammer it, hang, or buffer gigabytes) and complete (a history read while the mempool
moves must not silently lose a transaction).

Two layers, as everywhere in dashpay's network code:
- the pure parsers (``parse_tx``, ``parse_history_page``, ``parse_block``,
  ``parse_status``, ``parse_chainlock``), the values they return and the errors live in
  ``wire/insight_rest.py`` (imported here, so ``net.insight_rest`` still names them);
- ``InsightRest`` here, a thin shell with retries, a shared rate-limit pause, a
  concurrency limit and a response size limit, over the callback poster's lean
  HTTP/1.1 client (``net/http_post.py``: our own codec, keep-alive, one write per
  request). httpx cost ~0.7 ms of CPU per request, over half of what a payment that
  arrives alone cost the daemon, since every payment is read back over REST.

Wire facts used here are in ``docs/insight-protocol.md`` §3 and §4: errors are not JSON
(400 ``"<message>. Code:<n>"``, 404 ``Not found``, 503 plain text, 429 JSON); ``POST
/addrs/txs`` takes ``addrs`` as one comma-separated string and windows ``from``/``to`` of
at most 50; ``vout[].value`` is a DASH string; mempool txs have ``blockheight`` -1 and no
``blockhash``; REST ``txlock`` is cached until the next block and is true for
InstantSend *or* ChainLock.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import trio

from dashpay import __version__
from dashpay.domain.backoff import exponential_delay, jittered
from dashpay.domain.observations import TxObserved
from dashpay.net.http_post import (
    ConnectFailed,
    HttpPoster,
    HttpPostError,
    TlsFailed,
    configured_addresses,
)
from dashpay.net.outbound import Outbound, default_outbound, with_trust_hint
from dashpay.wire.http1 import BodyTooLarge, retry_after_seconds
from dashpay.wire.insight_rest import (
    ADDRESS,
    NO_CHAINLOCK,
    BlockInfo,
    ChainLockInfo,
    HistoryPage,
    InsightError,
    InsightMalformed,
    InsightRejected,
    InsightUnavailable,
    NodeStatus,
    decode_json,
    excerpt,
    hex64,
    is_route_missing,
    merge_tx,
    parse_block,
    parse_chainlock,
    parse_history_page,
    parse_status,
    parse_tx,
    show,
)

log = logging.getLogger("dashpay.insight.rest")

# --- limits, each with its reason -------------------------------------------------------

# Largest successful response body we buffer (after content decoding, so a gzip bomb is
# caught too). The biggest answer we ask for is one history page: 50 txs. A standard Dash
# tx is at most 100 kB; Insight's JSON for it (hex + asm scripts, per-input fields) is
# roughly 4x that, so a worst-case page is ~20 MB even if the server ignores our
# noAsm/noScriptSig flags. 32 MiB fits that with room to spare and still bounds the
# memory a broken or hostile server can make the daemon hold per request (times
# `concurrency`).
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# Error bodies are only shown to people as an excerpt; there is no reason to read more.
MAX_ERROR_BODY_BYTES = 64 * 1024
# dashd's maxTransactionHistory: a wider window is answered with 503 (protocol §3).
MAX_PAGE_SIZE = 50
# Addresses per POST /addrs/txs. 1000 addresses are ~36 kB of body, well under the
# 100 kB default limit of express's body parser in front of insight-api.
MAX_ADDRESS_BATCH = 1000
# Receiver addresses are single-use; a batch whose history is longer than this is a
# misconfiguration (someone else's busy address) or a hostile server, and paging through
# it would cost thousands of requests against a 10,800-per-3-hours rate limit.
MAX_HISTORY_ITEMS = 100_000
# Reads of one batch before giving up when its history keeps moving under us (a new or
# evicted mempool tx shifts the pages). Each pass is cheap; the next rescan tries again.
MAX_HISTORY_PASSES = 3
# Longest Retry-After we wait inside a call. insight-api's limiter has a fixed 3-hour
# window; sleeping that long inside a rescan would hold it hostage, so a longer pause
# fails fast with InsightUnavailable (and later calls keep respecting the pause).
MAX_RETRY_AFTER = 300.0
# Trimming flags insight-api reads from the query string only, even on POST (§3): they
# drop scripts and spent info we never use, which shrinks each history page severalfold.
HISTORY_QUERY = {"noAsm": "1", "noScriptSig": "1", "noSpent": "1"}

_USER_AGENT = f"dashpay/{__version__}"


# --- the client -------------------------------------------------------------------------


class InsightRest:
    """REST client for one Insight server. Safe to share between tasks.

    Every public method may be cancelled at any point; nothing is left half-done except
    a shared rate-limit pause, which is meant to outlive the call that saw the 429.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        address_batch: int = 100,
        page_size: int = 50,
        concurrency: int = 4,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        outbound: Outbound | None = None,
    ) -> None:
        """``outbound``: the trust store and proxies (default: the environment's)."""
        url = _check_base_url(base_url)
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts!r}")
        if backoff_initial < 0 or backoff_max < backoff_initial:
            raise ValueError("backoff needs 0 <= backoff_initial <= backoff_max")
        if not 1 <= address_batch <= MAX_ADDRESS_BATCH:
            raise ValueError(f"address_batch must be 1..{MAX_ADDRESS_BATCH}, got {address_batch}")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(
                f"page_size must be 1..{MAX_PAGE_SIZE} (Insight's largest window), got {page_size}"
            )
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be positive")
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._address_batch = address_batch
        self._page_size = page_size
        self._max_response_bytes = max_response_bytes
        self._base_path = url.path  # ends with "/"; used in messages instead of the URL
        self._password = url.password or ""
        self._limiter = trio.CapacityLimiter(concurrency)
        self._not_before = float("-inf")  # trio clock; shared pause after a 429
        self._random = random.Random()
        # The base URL without credentials (they go in an Authorization header).
        self._base = f"{url.scheme}://{url.netloc}{url.path}"
        self._headers = [
            ("User-Agent", _USER_AGENT),
            ("Accept", "application/json"),
            ("Accept-Encoding", "identity"),  # never spend CPU inflating an answer
        ]
        if url.username or url.password:
            basic = f"{url.username}:{url.password}".encode()
            self._headers.append(("Authorization", "Basic " + base64.b64encode(basic).decode()))
        # The whole answer may take the request's timeout (the caller bounds it too).
        self._scheme = url.scheme
        self._outbound = outbound or default_outbound()
        self._http = HttpPoster(
            self._addresses,
            outbound=self._outbound,
            max_body=max_response_bytes,
            body_seconds=timeout,
            max_idle_per_origin=concurrency,
        )
        self.requests_made = 0

    async def __aenter__(self) -> InsightRest:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _addresses(self, host: str, port: int) -> list[str]:
        """Where to connect: through a proxy the name itself (the proxy resolves it, and
        may be the only one that can), else its addresses here."""
        return await configured_addresses(self._outbound, self._scheme, host, port)

    # --- public calls -------------------------------------------------------------------

    async def status(self) -> NodeStatus:
        """The node's network, height and version (``GET /status?q=getInfo``)."""
        payload = await self._get_json("status", {"q": "getInfo"})
        return self._parsed(parse_status, payload, "status")

    async def best_height(self) -> int | None:
        """The node's block count (``status``), for ``dashpay status``."""
        return (await self.status()).blocks

    async def best_chainlock(self) -> ChainLockInfo | None:
        """The best ChainLock dashd knows, or None if it has none yet."""
        try:
            payload = await self._get_json("status", {"q": "getBestChainLock"})
        except InsightRejected as exc:
            if NO_CHAINLOCK in str(exc).lower():
                return None
            raise
        return self._parsed(parse_chainlock, payload, "status")

    async def tx(self, txid: str) -> TxObserved | None:
        """One transaction, or None if Insight does not know it (never mined, or dropped
        from the mempool). Note: REST ``txlock`` may lag until the next block."""
        wanted = hex64(txid)
        if wanted is None:
            raise ValueError(f"txid {show(txid)} is not 64 hex digits")
        status, body = await self._request("GET", f"tx/{wanted}")
        if status == 404:
            return self._not_found(f"tx/{wanted}", body)
        payload = self._decode(f"tx/{wanted}", body)
        tx = self._parsed(parse_tx, payload, f"tx/{wanted}")
        if tx.txid != wanted:
            raise InsightError(
                f"Insight GET {self._base_path}tx/{wanted}: answered with tx {tx.txid}",
                path=f"{self._base_path}tx/{wanted}",
            )
        return tx

    async def block(self, block_hash: str) -> BlockInfo | None:
        """One block, or None if Insight does not know it."""
        wanted = hex64(block_hash)
        if wanted is None:
            raise ValueError(f"block hash {show(block_hash)} is not 64 hex digits")
        status, body = await self._request("GET", f"block/{wanted}")
        if status == 404:
            return self._not_found(f"block/{wanted}", body)
        block = self._parsed(parse_block, self._decode(f"block/{wanted}", body), f"block/{wanted}")
        if block.hash != wanted:
            raise InsightError(
                f"Insight GET {self._base_path}block/{wanted}: answered with block {block.hash}",
                path=f"{self._base_path}block/{wanted}",
            )
        return block

    async def address_history(
        self, addresses: Sequence[str], *, skipped: set[str] | None = None
    ) -> list[TxObserved]:
        """Every transaction touching ``addresses`` (mempool and confirmed), once each.

        Addresses go ``address_batch`` at a time to ``POST /addrs/txs``, paged by
        ``page_size``; up to ``concurrency`` requests are in flight. A batch is re-read
        when its pages disagree (a tx entered or left the mempool while we paged: the
        totals differ, a page is short, or an item shows up twice), so such a shift never
        loses a tx; after MAX_HISTORY_PASSES restless reads it raises InsightUnavailable.

        A malformed item is logged and skipped instead of failing the whole history; its
        txid is added to ``skipped`` if given ("" when the txid itself is unreadable).
        A caller that treats "absent from history" as "dropped" must not do so for
        those txids, and must treat the history as incomplete when "" is in the set.
        """
        for address in addresses:
            if not isinstance(address, str) or not ADDRESS.fullmatch(address):
                raise ValueError(f"{show(address)} is not a Dash address")
        unique = list(dict.fromkeys(addresses))
        results: dict[str, TxObserved] = {}
        batches = [
            unique[i : i + self._address_batch] for i in range(0, len(unique), self._address_batch)
        ]
        await self._run_all(
            [_bind(self._batch_history, batch, results, skipped) for batch in batches]
        )
        return list(results.values())

    # --- history ------------------------------------------------------------------------

    async def _batch_history(
        self, batch: list[str], results: dict[str, TxObserved], skipped: set[str] | None
    ) -> None:
        for attempt in range(1, MAX_HISTORY_PASSES + 1):
            first = await self._history_page(batch, 0, self._page_size)
            total = first.total_items
            if total > MAX_HISTORY_ITEMS:
                raise InsightError(
                    f"Insight reports {total} transactions for a batch of {len(batch)} "
                    f"addresses, more than the {MAX_HISTORY_ITEMS} a payment processor's "
                    "single-use addresses can have; check that the wallet's addresses are "
                    "not shared with something else",
                    path=f"{self._base_path}addrs/txs",
                )
            pages: dict[int, HistoryPage] = {0: first}
            await self._run_all(
                [
                    _bind(self._fetch_page, batch, start, total, pages)
                    for start in range(self._page_size, total, self._page_size)
                ]
            )
            found, bad_txids, unreadable = _parse_pages(pages)
            seen = len(found) + len(bad_txids) + unreadable
            # Complete iff every page saw the same total, no page came back short, and no
            # item was counted twice: a duplicate means the list shifted between pages,
            # so some other item may have slipped past unseen.
            consistent = all(page.total_items == total for page in pages.values()) and all(
                len(page.items) >= min(start + self._page_size, total) - start
                for start, page in pages.items()
            )
            if consistent and seen >= total:
                for tx in found.values():
                    merge_tx(results, tx)
                if skipped is not None:
                    skipped.update(bad_txids)
                    if unreadable:
                        skipped.add("")
                return
            log.info(
                "insight_history_moved addresses=%d total=%d seen=%d pass=%d",
                len(batch),
                total,
                seen,
                attempt,
            )
        raise InsightUnavailable(
            f"Insight POST {self._base_path}addrs/txs: the history of {len(batch)} addresses "
            f"changed during each of {MAX_HISTORY_PASSES} reads (busy mempool); try again"
        )

    async def _fetch_page(
        self, batch: list[str], start: int, total: int, pages: dict[int, HistoryPage]
    ) -> None:
        pages[start] = await self._history_page(batch, start, min(start + self._page_size, total))

    async def _history_page(self, batch: list[str], start: int, end: int) -> HistoryPage:
        path = "addrs/txs"
        body = {"addrs": ",".join(batch), "from": start, "to": end}
        status, raw = await self._request("POST", path, params=HISTORY_QUERY, json_body=body)
        if status == 404:
            raise self._route_error("POST", path)
        return self._parsed(parse_history_page, self._decode(path, raw), path)

    # --- plumbing -----------------------------------------------------------------------

    async def _get_json(self, path: str, params: dict[str, str]) -> Any:
        status, body = await self._request("GET", path, params=params)
        if status == 404:
            raise self._route_error("GET", path)
        return self._decode(path, body)

    def _decode(self, path: str, body: bytes) -> Any:
        try:
            return decode_json(body)
        except ValueError:
            raise InsightError(
                f"Insight {self._base_path}{path}: answered with a body that is not JSON "
                f"({excerpt(body)}); check that the Insight URL points at the API prefix",
                path=self._base_path + path,
                status=200,
            ) from None

    def _parsed(self, parser: Callable[[Any], Any], payload: Any, path: str) -> Any:
        try:
            return parser(payload)
        except InsightMalformed as exc:
            exc.path = self._base_path + path
            raise

    def _not_found(self, path: str, body: bytes) -> None:
        if is_route_missing(body):
            raise self._route_error("GET", path)
        return None

    def _route_error(self, method: str, path: str) -> InsightError:
        return InsightError(
            f"Insight {method} {self._base_path}{path}: HTTP 404, no such route; check the "
            "Insight URL's path prefix (usually /insight-api, sometimes /insight-api-dash "
            "or /api)",
            path=self._base_path + path,
            status=404,
        )

    async def _run_all(self, jobs: list[Callable[[], Awaitable[None]]]) -> None:
        """Run ``jobs`` concurrently. The first InsightError cancels the rest and is
        raised as itself, not inside an ExceptionGroup, so callers can catch it by type."""
        if len(jobs) == 1:
            await jobs[0]()
            return
        failures: list[InsightError] = []
        async with trio.open_nursery() as nursery:

            async def run(job: Callable[[], Awaitable[None]]) -> None:
                try:
                    await job()
                except InsightError as exc:
                    failures.append(exc)
                    nursery.cancel_scope.cancel()

            for job in jobs:
                nursery.start_soon(run, job)
        if failures:
            raise failures[0]

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> tuple[int, bytes]:
        """Send with retries. Returns (status, body) for 2xx and 404 only.

        Retried: network errors, timeouts, 5xx and 429, with jittered exponential
        backoff; a 429 also pauses every other request of this client until its
        Retry-After (or backoff) has passed. Not retried: other 4xx (InsightRejected),
        redirects and oversized bodies (InsightError).
        """
        shown = self._base_path + path  # path only: the URL may carry credentials
        failure = ""
        for attempt in range(1, self._max_attempts + 1):
            await self._wait_for_pause(method, shown)
            retry_after: float | None = None
            rate_limited = False
            try:
                async with self._limiter:
                    self.requests_made += 1
                    with trio.move_on_after(self._timeout) as scope:
                        status, headers, body = await self._send(method, path, params, json_body)
                if scope.cancelled_caught:
                    raise _NoAnswer(f"no complete answer within {self._timeout}s")
            except (HttpPostError, OSError, ValueError) as exc:
                kind = _FAILURE_NAMES.get(type(exc), "ReadError")
                # The hint comes after the excerpt, so that cutting a long text keeps it.
                failure = with_trust_hint(f"{kind}: {self._scrub(str(exc)) or 'no details'}")
            except BodyTooLarge:
                raise InsightError(
                    f"Insight {method} {shown}: response larger than "
                    f"{self._max_response_bytes} bytes, refused",
                    path=shown,
                ) from None
            else:
                if 200 <= status < 300 or status == 404:
                    return status, body
                failure = f"HTTP {status}: {excerpt(body)}"
                if 300 <= status < 400:
                    location = self._scrub(headers.get("location", "?"))
                    raise InsightError(
                        f"Insight {method} {shown}: redirected ({status}) to {location}; "
                        "set the Insight URL to the final address",
                        path=shown,
                        status=status,
                    )
                if 400 <= status < 500 and status != 429:
                    raise InsightRejected(
                        f"Insight {method} {shown}: {failure}", path=shown, status=status
                    )
                if status == 429:
                    rate_limited = True
                    retry_after = retry_after_seconds(headers.get("retry-after"), time.time())
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            if rate_limited:
                # Everyone waits, not just this request: the limit is per client.
                self._pause_all(delay)
            if attempt == self._max_attempts:
                break
            log.warning(
                "insight_retry method=%s path=%s attempt=%d delay=%.2f reason=%s",
                method,
                shown,
                attempt,
                delay,
                failure,
            )
            if not rate_limited:
                await trio.sleep(delay)  # a 429 pause is waited for at the loop's top
        raise InsightUnavailable(
            f"Insight {method} {shown}: gave up after {self._max_attempts} attempts; "
            f"last: {failure}",
            path=shown,
        )

    async def _send(
        self, method: str, path: str, params: Mapping[str, str] | None, json_body: Any
    ) -> tuple[int, dict[str, str], bytes]:
        """One exchange; reads at most the size limit of the body (a short excerpt for
        error statuses, which are only ever shown to people)."""
        url = self._base + path
        if params:
            url += "?" + urlencode(params)
        headers = self._headers
        body = b""
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers = [*headers, ("Content-Type", "application/json")]
        response = await self._http.request(method, url, headers, body)
        ok = 200 <= response.status < 300
        if ok and not response.complete:
            if len(response.body) >= self._max_response_bytes:
                raise BodyTooLarge
            raise _NoAnswer("the answer's body was cut short")
        found = {k.decode("latin-1"): v.decode("latin-1") for k, v in response.headers}
        return response.status, found, response.body if ok else response.body[:MAX_ERROR_BODY_BYTES]

    def _pause_all(self, delay: float) -> None:
        self._not_before = max(self._not_before, trio.current_time() + delay)

    async def _wait_for_pause(self, method: str, shown: str) -> None:
        while (remaining := self._not_before - trio.current_time()) > 0:
            if remaining > MAX_RETRY_AFTER:
                raise InsightUnavailable(
                    f"Insight {method} {shown}: rate limited by the server for another "
                    f"{remaining:.0f}s; try later or ask its operator for a higher limit",
                    path=shown,
                    status=429,
                )
            await trio.sleep_until(self._not_before)

    def _backoff(self, attempt: int) -> float:
        """Exponential, capped, jittered to 50-100% so clients that failed together do
        not come back together."""
        ceiling = exponential_delay(attempt - 1, self._backoff_initial, self._backoff_max)
        return jittered(ceiling, self._random.random())

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return excerpt(text.encode())


class _NoAnswer(HttpPostError):
    """No complete answer in time, or a body cut short: retried like a network error."""


# How a failure is named in messages (the names httpx used, which operators know).
_FAILURE_NAMES: dict[type, str] = {
    ConnectFailed: "ConnectError",
    TlsFailed: "ConnectError",
    _NoAnswer: "Timeout",
}


@dataclass(frozen=True, slots=True)
class _BaseUrl:
    scheme: str
    netloc: str  # host[:port], no credentials; an IPv6 host in brackets
    path: str  # ends with "/"
    username: str
    password: str


def _check_base_url(base_url: str) -> _BaseUrl:
    """Parse the configured Insight URL; keep its path prefix and make it end in "/"
    (the stdlib's parser: httpx's would be the daemon's only use of httpx)."""
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"Insight URL is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme not in ("http", "https") or not host:
        raise ValueError(
            "Insight URL must look like http(s)://HOST[:PORT]/insight-api, "
            f"got scheme {scheme or '(none)'!r}"
        )
    if parts.query or parts.fragment or base_url.rstrip().endswith(("?", "#")):
        raise ValueError("Insight URL must not have a query (?...) or fragment (#...)")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        netloc += f":{port}"
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return _BaseUrl(
        scheme, netloc, path, unquote(parts.username or ""), unquote(parts.password or "")
    )


def _parse_pages(
    pages: dict[int, HistoryPage],
) -> tuple[dict[str, TxObserved], set[str], int]:
    """Parse the items of one pass: (good txs by txid, txids of malformed items, number
    of malformed items whose txid itself is unreadable). Each skip is logged."""
    found: dict[str, TxObserved] = {}
    bad: set[str] = set()
    unreadable = 0
    for start in sorted(pages):
        for item in pages[start].items:
            try:
                tx = parse_tx(item)
            except InsightMalformed as exc:
                if exc.txid:
                    bad.add(exc.txid)
                else:
                    unreadable += 1
                log.warning(
                    "insight_item_skipped txid=%s field=%s reason=%s",
                    exc.txid or "?",
                    exc.field,
                    exc.reason,
                )
                continue
            merge_tx(found, tx)
    return found, bad - found.keys(), unreadable


def _bind(function: Callable[..., Awaitable[None]], *args: Any) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        await function(*args)

    return call
