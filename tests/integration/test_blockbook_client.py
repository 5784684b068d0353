"""``BlockbookClient`` in process against the Blockbook peer on loopback (the real
websocket, the real messages): the watched set spread over connections of at most
1,000 addresses, a change resubscribing only its slice, notifications from every
slice, history pages (mempool first, a page past the end repeating the last), locks
read with getTransactionSpecific, and a dropped link resubscribed in full."""

from __future__ import annotations

import os

import pytest
import trio

from dashpay.domain.observations import SocketConnected, TxObserved
from dashpay.domain.wallet import P2PKH_VERSION, b58encode_check
from dashpay.net.blockbook import BlockbookClient
from tests.blockbook_peer import BlockbookPeer

COIN = 100_000_000


def addresses(count: int) -> list[str]:
    version = bytes([P2PKH_VERSION["testnet"]])
    return [b58encode_check(version + os.urandom(20)) for _ in range(count)]


@pytest.fixture
def peer():
    peer = BlockbookPeer()
    yield peer
    peer.close()


async def blocking(fn, *args, lock: bool | None = None):
    """The peer's calls block (they wait for its own trio thread): run them in one."""
    call = fn if lock is None else (lambda *a: fn(*a, lock=lock))
    return await trio.to_thread.run_sync(call, *args)


async def until(predicate, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def next_tx(receive, txid: str) -> TxObserved:
    with trio.fail_after(10):
        async for message in receive:
            if isinstance(message, TxObserved) and message.txid == txid:
                return message
    raise AssertionError("channel closed")


async def test_2500_addresses_take_three_connections_and_a_new_one_resubscribes_only_the_last(
    peer,
):
    watched = addresses(2500)
    client = BlockbookClient(peer.url + "/websocket", network="testnet", reconnect_initial=0.1)
    client.track(lambda: watched)
    send, receive = trio.open_memory_channel(1000)
    server = peer.server
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run, send)
        # Three connections, each subscribed to its slice (a connection the peer resets
        # under load comes back and subscribes again: wait for the slices, not for the
        # first three connections to exist).
        def sizes() -> list[int]:
            return sorted(len(c.addresses) for c in server.clients)

        await until(lambda: client.state == "connected" and sizes() == [500, 1000, 1000])
        assert set().union(*(c.addresses for c in server.clients)) == set(watched)
        before = len(server.subscription_sizes)

        new = addresses(3)
        client.watch(new)
        await until(lambda: any(new[0] in c.addresses for c in server.clients))
        await trio.sleep(0.3)
        assert server.subscription_sizes[before:] == [503]  # one batched resubscription

        # A notification for an address of each slice reaches the channel.
        for address in (watched[0], watched[1500], new[2]):
            txid = await blocking(peer.pay, address, COIN, lock=False)
            tx = await next_tx(receive, txid)
            assert tx.outputs[address] == COIN and tx.instant_locked is False

        # A dropped link: reconnected, subscribed again in full, SocketConnected again.
        await blocking(
            peer.server_down,
        )
        await blocking(
            peer.server_up,
        )
        server = peer.server
        with trio.fail_after(10):
            async for message in receive:
                if isinstance(message, SocketConnected) and client.state == "connected":
                    break
        # Each connection subscribes once it is up, and a connection the restart
        # resets comes back on its own: wait for the three to cover the set.
        everything = set(watched) | set(new)

        def subscribed() -> set[str]:
            return set().union(*(c.addresses for c in server.clients))

        await until(lambda: len(server.clients) == 3 and subscribed() == everything)
        assert sorted(len(c.addresses) for c in server.clients) == [503, 1000, 1000]
        nursery.cancel_scope.cancel()


async def test_history_lookups_and_locks(peer):
    (address,) = addresses(1)
    client = BlockbookClient(peer.url + "/websocket", network="testnet", reconnect_initial=0.1)
    client.track(lambda: [address])
    send, receive = trio.open_memory_channel(1000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run, send)
        await until(lambda: client.state == "connected")
        mined = await blocking(peer.pay, address, 1_000, lock=False)
        await blocking(peer.mine, 1)
        locked = await blocking(peer.pay, address, 2_000, lock=False)
        await blocking(peer.lock, locked)
        loose = await blocking(peer.pay, address, 3_000, lock=False)
        history = {tx.txid: tx for tx in await client.address_history([address])}
        assert set(history) == {mined, locked, loose}
        assert history[mined].confirmations == 1 and history[loose].confirmations == 0
        assert (await client.tx(mined)).instant_locked is True  # ChainLocked block
        assert (await client.tx(locked)).instant_locked is True  # InstantSend
        assert (await client.tx(loose)).instant_locked is False
        assert await client.tx("ab" * 32) is None
        assert await client.best_height() == peer.network.chain.height
        nursery.cancel_scope.cancel()


async def test_a_history_longer_than_a_page_is_read_whole(peer, monkeypatch):
    """Pages of 2: page 1 is the mempool, a page past the end answers the last again."""
    from dashpay.wire import blockbook

    monkeypatch.setattr(blockbook.AccountPager, "__init__", _small_pages)
    (address,) = addresses(1)
    client = BlockbookClient(peer.url + "/websocket", network="testnet")
    send, _ = trio.open_memory_channel(1000)
    txids = [await blocking(peer.pay, address, 1_000 + i) for i in range(3)]
    await blocking(peer.mine, 1)
    txids += [await blocking(peer.pay, address, 2_000 + i) for i in range(2)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run, send)
        history = await client.address_history([address])
        assert sorted(tx.txid for tx in history) == sorted(txids)
        pages = [m for m in peer.server.methods if m == "getAccountInfo"]
        assert len(pages) == 3
        nursery.cancel_scope.cancel()


def _small_pages(self, descriptor, page_size=2, seen=None, _page=0, done=False):
    self.descriptor, self.page_size = descriptor, 2
    self.seen = {} if seen is None else seen
    self._page, self.done = _page, done
