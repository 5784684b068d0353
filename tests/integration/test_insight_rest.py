"""InsightRest against a real HTTP server on loopback (tests/insight_stub.py) serving
the bodies and status codes insight-api really sends."""

from __future__ import annotations

import copy
import json
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from dashpay.net.insight_rest import InsightError, InsightRejected, InsightRest, InsightUnavailable
from tests.insight_stub import InsightStub, Reply, Request, text

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "insight"
HISTORY = json.loads((FIXTURES / "addrs-txs-response-testnet.json").read_text())
MEMPOOL_TX = json.loads((FIXTURES / "tx-mainnet-mempool-txlock.json").read_text())
MEMPOOL_TXID = MEMPOOL_TX["txid"]
BLOCK_HASH = "0000000000000005dffc9095302167894319765fbd4df76ce2f322aa4e3c2f63"
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
STATUS = {"info": {"version": 180002, "blocks": 1699028, "network": "livenet", "errors": ""}}


def address(i: int) -> str:
    digits = ""
    while True:
        i, rem = divmod(i, 58)
        digits = B58[rem] + digits
        if i == 0:
            break
    return "y" + digits.rjust(33, "1")


def index_of(addr: str) -> int:
    """Inverse of address()."""
    value = 0
    for ch in addr[1:]:
        value = value * 58 + B58.index(ch)
    return value


def synthetic_tx(i: int, pays: str | None = None) -> dict:
    """The confirmed fixture item with its own txid, paying `pays` 0.21247964 DASH."""
    item = copy.deepcopy(HISTORY["items"][1])
    item["txid"] = f"{i:064x}"
    item["vout"][0]["scriptPubKey"]["addresses"] = [pays or address(i)]
    return item


def history_server(items_for: Callable[[list[str]], list[dict]]):
    """A POST /addrs/txs handler slicing `items_for(addrs)` like insight-api does."""

    def handle(request: Request) -> Reply:
        body = request.json()
        assert isinstance(body["addrs"], str), "addrs must be a comma-separated string"
        items = items_for(body["addrs"].split(","))
        start, end = int(body["from"]), min(int(body["to"]), len(items))
        assert 0 < int(body["to"]) - start <= 50, "window over 50 gives a 503 on insight-api"
        return Reply(
            200, {"totalItems": len(items), "from": start, "to": end, "items": items[start:end]}
        )

    return handle


def windows(stub: InsightStub) -> list[tuple[int, int]]:
    return sorted((r.json()["from"], r.json()["to"]) for r in stub.requests_to("POST", "addrs/txs"))


@pytest.fixture
def stub():
    with InsightStub() as server:
        yield server


def fast_client(url: str, **options) -> InsightRest:
    options.setdefault("backoff_initial", 0.01)
    options.setdefault("backoff_max", 0.05)
    return InsightRest(url, **options)


async def test_history_pages_past_fifty_items_with_exact_windows_and_comma_string(stub):
    items = [synthetic_tx(i) for i in range(120)]
    stub.route("POST", "addrs/txs", history_server(lambda addrs: items))
    wanted = [address(1), address(2)]
    async with fast_client(stub.url) as rest:
        found = await rest.address_history(wanted)
        assert rest.requests_made == 3
    assert sorted(tx.txid for tx in found) == sorted(item["txid"] for item in items)
    assert windows(stub) == [(0, 50), (50, 100), (100, 120)]
    for request in stub.requests_to("POST", "addrs/txs"):
        assert request.json()["addrs"] == f"{address(1)},{address(2)}"
        assert request.query == {"noAsm": "1", "noScriptSig": "1", "noSpent": "1"}
    assert found[0].outputs[address(0)] == 21247964


async def test_history_splits_addresses_into_batches_and_merges_shared_txs(stub):
    shared = synthetic_tx(10_000)

    def items_for(addrs: list[str]) -> list[dict]:
        return [shared, synthetic_tx(index_of(addrs[0]), addrs[0])]

    stub.route("POST", "addrs/txs", history_server(items_for))
    wanted = [address(i) for i in range(250)]
    async with fast_client(stub.url, address_batch=100) as rest:
        found = await rest.address_history(wanted + wanted[:5])  # repeats are sent once
    sent = [r.json()["addrs"].split(",") for r in stub.requests_to("POST", "addrs/txs")]
    assert sorted(len(batch) for batch in sent) == [50, 100, 100]
    assert sorted(a for batch in sent for a in batch) == sorted(wanted)
    assert sorted(tx.txid for tx in found) == sorted(
        [shared["txid"]] + [f"{i:064x}" for i in (0, 100, 200)]
    )


async def test_history_rereads_a_batch_when_total_items_changes_between_pages(stub):
    confirmed = [synthetic_tx(i) for i in range(60)]
    newcomer = synthetic_tx(999)
    calls = []

    def items_for(addrs):
        calls.append(1)
        return confirmed if len(calls) == 1 else [newcomer, *confirmed]  # mempool tx arrives

    stub.route("POST", "addrs/txs", history_server(items_for))
    async with fast_client(stub.url) as rest:
        found = await rest.address_history([address(1)])
    txids = [tx.txid for tx in found]
    assert len(txids) == len(set(txids)) == 61
    assert newcomer["txid"] in txids
    assert len(calls) == 4  # two pages, then two pages again


async def test_history_shift_that_repeats_an_item_is_deduplicated_and_reread(stub):
    old = [synthetic_tx(i) for i in range(60)]
    newcomer = synthetic_tx(999)
    calls = []

    def items_for(addrs):
        calls.append(1)
        # Same total, but everything shifted by one: page 2 would repeat old[49] and
        # never show old[59] unless the client notices and reads again.
        return old if len(calls) == 1 else [newcomer, *old[:-1]]

    stub.route("POST", "addrs/txs", history_server(items_for))
    async with fast_client(stub.url) as rest:
        found = await rest.address_history([address(1)])
    txids = [tx.txid for tx in found]
    assert len(txids) == len(set(txids)) == 60
    assert newcomer["txid"] in txids
    assert len(calls) == 4


async def test_history_that_changes_on_every_read_gives_up_as_unavailable(stub):
    grow = [synthetic_tx(i) for i in range(60)]

    def items_for(addrs):
        grow.insert(0, synthetic_tx(1000 + len(grow)))
        return list(grow)

    stub.route("POST", "addrs/txs", history_server(items_for))
    async with fast_client(stub.url) as rest:
        with pytest.raises(InsightUnavailable, match="changed during each of 3 reads"):
            await rest.address_history([address(1)])


async def test_one_malformed_history_item_is_skipped_logged_and_reported(stub, caplog):
    bad = copy.deepcopy(HISTORY["items"][1])
    bad["txid"] = "ab" * 32
    bad["vout"][0]["value"] = "lots"
    payload = {
        **HISTORY,
        "totalItems": 3,
        "to": 3,
        "items": [HISTORY["items"][0], bad, HISTORY["items"][1]],
    }
    stub.route("POST", "addrs/txs", Reply(200, payload))
    skipped: set[str] = set()
    caplog.set_level(logging.WARNING, logger="dashpay.insight.rest")
    async with fast_client(stub.url) as rest:
        found = await rest.address_history(["yTCZ7iv1U6p6MXp278FhMFZmKDbmgx89oX"], skipped=skipped)
    assert [tx.txid for tx in found] == [HISTORY["items"][0]["txid"], HISTORY["items"][1]["txid"]]
    assert skipped == {"ab" * 32}
    assert any(
        "ab" * 32 in r.getMessage() and "vout[0].value" in r.getMessage() for r in caplog.records
    )


async def test_history_response_of_the_wrong_shape_raises_insight_error(stub):
    stub.route("POST", "addrs/txs", Reply(200, [HISTORY["items"][0]]))
    async with fast_client(stub.url) as rest:
        with pytest.raises(InsightError, match="totalItems|history page"):
            await rest.address_history([address(1)])


async def test_garbage_json_body_raises_insight_error_without_retrying(stub):
    stub.route("GET", "status", Reply(200, b'{"info": {"blocks": 1', "application/json"))
    async with fast_client(stub.url) as rest:
        with pytest.raises(InsightError, match="not JSON") as caught:
            await rest.status()
        assert rest.requests_made == 1
    assert not isinstance(caught.value, InsightUnavailable | InsightRejected)


async def test_503_is_retried_until_the_server_answers(stub):
    stub.route(
        "GET",
        "status",
        text(503, "dashd is warming up"),
        text(503, "dashd is warming up"),
        Reply(200, STATUS),
    )
    async with fast_client(stub.url) as rest:
        status = await rest.status()
        assert rest.requests_made == 3
    assert (status.network, status.blocks, status.version) == ("mainnet", 1699028, 180002)
    assert [r.query for r in stub.requests_to("GET", "status")] == [{"q": "getInfo"}] * 3


async def test_retries_are_spaced_by_jittered_backoff(stub):
    stub.route("GET", "status", text(503, "busy"), text(503, "busy"), Reply(200, STATUS))
    async with fast_client(stub.url, backoff_initial=0.2, backoff_max=0.3) as rest:
        await rest.status()
    times = [r.time for r in stub.requests_to("GET", "status")]
    # Jitter keeps each pause within 50-100% of 0.2 s, then 0.3 s (capped from 0.4 s).
    assert 0.09 <= times[1] - times[0] <= 0.35
    assert 0.14 <= times[2] - times[1] <= 0.45


async def test_persistent_503_gives_unavailable_naming_path_status_and_body_not_password(stub):
    stub.route("GET", "status", text(503, "Error: dashd RPC unreachable"))
    url = stub.url.replace("http://", "http://merchant:s3cretpw@")
    async with fast_client(url, max_attempts=3) as rest:
        with pytest.raises(InsightUnavailable) as caught:
            await rest.status()
        assert rest.requests_made == 3
    message = str(caught.value)
    assert "/insight-api/status" in message and "503" in message
    assert "dashd RPC unreachable" in message
    assert "s3cretpw" not in message and "127.0.0.1" not in message
    assert stub.requests[0].headers["authorization"].startswith("Basic ")


async def test_429_waits_for_retry_after_before_trying_again(stub):
    stub.route(
        "GET",
        "status",
        Reply(429, {"status": 429, "error": "Rate limit exceeded"}, headers={"Retry-After": "1"}),
        Reply(200, STATUS),
    )
    started = time.monotonic()
    async with fast_client(stub.url) as rest:
        await rest.status()
    assert time.monotonic() - started >= 1.0
    first, second = stub.requests_to("GET", "status")
    assert second.time - first.time >= 0.95


async def test_429_pauses_the_other_requests_of_the_client_too(stub):
    stub.route(
        "GET",
        "status",
        Reply(429, {"status": 429, "error": "Rate limit exceeded"}, headers={"Retry-After": "1"}),
        Reply(200, STATUS),
    )
    stub.route("GET", f"tx/{MEMPOOL_TXID}", Reply(200, MEMPOOL_TX))
    async with fast_client(stub.url) as rest, trio.open_nursery() as nursery:
        nursery.start_soon(rest.status)

        async def later_tx() -> None:
            await trio.sleep(0.3)  # the 429 has been received by now
            assert await rest.tx(MEMPOOL_TXID) is not None

        nursery.start_soon(later_tx)
    rate_limited = stub.requests_to("GET", "status")[0]
    (tx_request,) = stub.requests_to("GET", f"tx/{MEMPOOL_TXID}")
    assert tx_request.time - rate_limited.time >= 0.95


async def test_400_plain_text_is_rejected_with_the_server_message_and_not_retried(stub):
    stub.route(
        "POST",
        "addrs/txs",
        text(400, "Invalid address: Checksum mismatch. Code:1", "text/html; charset=utf-8"),
    )
    async with fast_client(stub.url) as rest:
        with pytest.raises(InsightRejected, match="Invalid address: Checksum mismatch. Code:1"):
            await rest.address_history([address(1)])
        assert rest.requests_made == 1


async def test_tx_fetches_a_mempool_tx_over_http(stub):
    stub.route("GET", f"tx/{MEMPOOL_TXID}", Reply(200, MEMPOOL_TX))
    async with fast_client(stub.url) as rest:
        tx = await rest.tx(MEMPOOL_TXID.upper())
    assert tx is not None
    assert dict(tx.outputs) == {"XmCyQ6qARLWXap74QubFMunngoiiA1QgCL": 99809}
    assert (tx.block_height, tx.confirmations, tx.instant_locked) == (None, 0, True)


async def test_unknown_tx_and_block_are_none(stub):
    stub.route("GET", f"tx/{MEMPOOL_TXID}", text(404, "Not found"))
    stub.route("GET", f"block/{BLOCK_HASH}", text(404, "Not found"))
    async with fast_client(stub.url) as rest:
        assert await rest.tx(MEMPOOL_TXID) is None
        assert await rest.block(BLOCK_HASH) is None
        assert rest.requests_made == 2


async def test_a_missing_route_is_an_error_not_a_vanished_tx(stub):
    # Nothing routed: the stub answers like insight-api for an unknown route (JSON 404),
    # which is what a wrong URL prefix looks like. It must not read as "tx is gone".
    async with fast_client(stub.url) as rest:
        with pytest.raises(InsightError, match="prefix"):
            await rest.tx(MEMPOOL_TXID)


async def test_base_url_prefix_is_kept_with_or_without_trailing_slash():
    with InsightStub(prefix="/api") as stub:
        stub.route("GET", "status", Reply(200, STATUS))
        for url in (stub.url, stub.url + "/"):
            async with fast_client(url) as rest:
                assert (await rest.status()).network == "mainnet"
        assert [r.path for r in stub.requests] == ["/api/status", "/api/status"]


async def test_block_and_best_chainlock_are_parsed(stub):
    block = {
        "hash": BLOCK_HASH,
        "height": 1699028,
        "previousblockhash": "0" * 16 + "a" * 48,
        "confirmations": 1,
        "isMainChain": True,
        "time": 1656988783,
        "tx": [],
    }
    stub.route("GET", f"block/{BLOCK_HASH}", Reply(200, block))
    lock = {
        "bestchainlock": {
            "blockhash": BLOCK_HASH,
            "height": 1699028,
            "signature": "00",
            "known_block": True,
        }
    }
    stub.route("GET", "status", Reply(200, lock))
    async with fast_client(stub.url) as rest:
        info = await rest.block(BLOCK_HASH)
        chainlock = await rest.best_chainlock()
    assert info is not None and (info.height, info.previous_hash) == (1699028, "0" * 16 + "a" * 48)
    assert chainlock is not None and (chainlock.block_hash, chainlock.height) == (
        BLOCK_HASH,
        1699028,
    )
    assert stub.requests_to("GET", "status")[0].query == {"q": "getBestChainLock"}


async def test_no_chainlock_yet_is_none(stub):
    stub.route("GET", "status", text(400, "Unable to find any ChainLock. Code:-32603", "text/html"))
    async with fast_client(stub.url) as rest:
        assert await rest.best_chainlock() is None


async def test_connection_refused_is_unavailable_after_max_attempts():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    async with fast_client(f"http://127.0.0.1:{port}/insight-api", max_attempts=3) as rest:
        with pytest.raises(InsightUnavailable, match="after 3 attempts") as caught:
            await rest.status()
        assert rest.requests_made == 3
    assert "ConnectError" in str(caught.value)
    assert time.monotonic() - started < 2


async def test_slow_server_times_out_and_is_unavailable(stub):
    stub.route("GET", "status", Reply(200, STATUS, delay=1.0))
    started = time.monotonic()
    async with fast_client(stub.url, timeout=0.2, max_attempts=2) as rest:
        with pytest.raises(InsightUnavailable, match="Timeout"):
            await rest.status()
    assert time.monotonic() - started < 0.9


async def test_response_over_the_size_limit_is_refused_without_retry(stub):
    stub.route("GET", f"tx/{MEMPOOL_TXID}", Reply(200, MEMPOOL_TX))
    async with fast_client(stub.url, max_response_bytes=1000) as rest:
        with pytest.raises(InsightError, match="larger than 1000 bytes"):
            await rest.tx(MEMPOOL_TXID)
        assert rest.requests_made == 1
