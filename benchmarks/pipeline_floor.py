"""The lone payment's I/O done with the least code trio allows: issue 19's CPU floor.

What the daemon cannot skip for a payment that arrives alone, in one trio task on the
benchmark's own thread:

- the read-back: ``POST addrs/txs`` for the paid address, as the daemon sends it, on a
  kept-alive connection to the same peer, the answer read to its Content-Length and
  decoded with ``orjson``;
- one record unit commit on the run's database (the caller's ``commit``: payment
  INSERT, receiver UPDATE, outbox INSERT, COMMIT, as ``isolated``'s floor);
- the callback: a POST of a callback-sized body signed with HMAC-SHA256, on a
  kept-alive connection to the same loopback receiver, its answer read.

Requests are formatted from templates made in advance and nothing is parsed beyond the
Content-Length. The payments are spaced as the daemon's were, so each one's wake-up
from the scheduler is counted too. CPU is this thread's (``time.thread_time``): the
receiver's thread and the peer are not counted, as they are not in the daemon's
figure. The ``tx`` event's read is left out, so this floor is lower than the work it
stands for.

``burst_io_floor`` is the same I/O for a burst (``record``): the read-back of every
paid address in requests of ``insight_rest.MAX_ADDRESS_BATCH`` addresses, paged by
``insight_rest.MAX_PAGE_SIZE`` items (the largest the daemon's client may ask for), one
request after another on one connection; then one signed callback POST per payment on
one kept-alive connection. The record units' commits are ``record.floor_rate``'s.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from statistics import median
from urllib.parse import SplitResult, urlencode, urlsplit

import orjson
import trio

from benchmarks.harness import BenchError
from dashpay.net import insight_rest

# The read-back's query string, as the daemon sends it.
HISTORY_QUERY = urlencode(insight_rest.HISTORY_QUERY)
CALLBACK_BODY_SIZE = 1200
SECRET = b"pipeline-floor-secret"
MAX_HEAD = 64 * 1024


def pipeline_floor(
    insight_url: str,
    sink_url: str,
    address: str,
    commit: Callable[[int], None],
    count: int,
    spacing: float,
) -> dict[str, float]:
    """CPU per payment (ms) of ``count`` payments ``spacing`` seconds apart, and the
    median wall time of one (read-back + commit + callback)."""
    return trio.run(_run, insight_url, sink_url, address, commit, count, spacing)


async def _run(
    insight_url: str,
    sink_url: str,
    address: str,
    commit: Callable[[int], None],
    count: int,
    spacing: float,
) -> dict[str, float]:
    peer = urlsplit(insight_url)
    sink = urlsplit(sink_url)
    readback = _history_request(peer, address, 0, insight_rest.MAX_PAGE_SIZE)
    callback = _Callback(sink)
    rest = await trio.open_tcp_stream(peer.hostname, peer.port)
    receiver = await trio.open_tcp_stream(sink.hostname, sink.port)
    walls: list[float] = []
    async with rest, receiver:
        rest_buffer, sink_buffer = bytearray(), bytearray()
        cpu_started = time.thread_time()
        next_at = trio.current_time()
        for i in range(count):
            await trio.sleep_until(next_at)
            next_at = trio.current_time() + spacing
            started = time.monotonic()
            await rest.send_all(readback)
            answer = await _response(rest, rest_buffer)
            if not isinstance(orjson.loads(answer), dict):
                raise BenchError("the peer's address history is not a JSON object")
            commit(i)
            await receiver.send_all(callback.request(i))
            await _response(receiver, sink_buffer)
            walls.append(time.monotonic() - started)
        cpu = (time.thread_time() - cpu_started) / count
    return {"cpu_ms": round(cpu * 1000, 4), "wall_ms": round((median(walls) or 0) * 1000, 3)}


def burst_io_floor(insight_url: str, sink_url: str, addresses: list[str]) -> dict[str, float]:
    """Wall and CPU seconds (this thread's) of the burst's read-back of ``addresses``
    and of one callback POST per address (see the module docstring)."""
    return trio.run(_burst, insight_url, sink_url, addresses)


async def _burst(insight_url: str, sink_url: str, addresses: list[str]) -> dict[str, float]:
    peer = urlsplit(insight_url)
    callback = _Callback(urlsplit(sink_url))
    batch, page = insight_rest.MAX_ADDRESS_BATCH, insight_rest.MAX_PAGE_SIZE
    figures: dict[str, float] = {}
    rest = await trio.open_tcp_stream(peer.hostname, peer.port)
    async with rest:
        buffer = bytearray()
        wall_started, cpu_started = time.perf_counter(), time.thread_time()
        items = 0
        for start in range(0, len(addresses), batch):
            chunk = ",".join(addresses[start : start + batch])
            offset, total = 0, 1
            while offset < total:
                await rest.send_all(_history_request(peer, chunk, offset, offset + page))
                answer = orjson.loads(await _response(rest, buffer))
                if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
                    raise BenchError("the peer's address history is not a page of items")
                total = int(answer.get("totalItems", 0))
                items += len(answer["items"])
                offset += page
        figures["readback_wall_s"] = time.perf_counter() - wall_started
        figures["readback_cpu_s"] = time.thread_time() - cpu_started
    if items < len(addresses):
        raise BenchError(f"the floor read back {items} txs for {len(addresses)} paid addresses")
    sink = urlsplit(sink_url)
    receiver = await trio.open_tcp_stream(sink.hostname, sink.port)
    async with receiver:
        buffer = bytearray()
        wall_started, cpu_started = time.perf_counter(), time.thread_time()
        for i in range(len(addresses)):
            await receiver.send_all(callback.request(i))
            await _response(receiver, buffer)
        figures["post_wall_s"] = time.perf_counter() - wall_started
        figures["post_cpu_s"] = time.thread_time() - cpu_started
    return figures


def _history_request(peer: SplitResult, addresses: str, start: int, end: int) -> bytes:
    """``POST addrs/txs`` for ``addresses`` (comma-separated), items ``start`` to
    ``end``, as the daemon sends it."""
    history = orjson.dumps({"addrs": addresses, "from": start, "to": end})
    return (
        f"POST {peer.path.rstrip('/')}/addrs/txs?{HISTORY_QUERY} HTTP/1.1\r\n"
        f"Host: {peer.netloc}\r\nUser-Agent: dashpay-floor\r\nAccept: application/json\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(history)}\r\n\r\n"
    ).encode() + history


class _Callback:
    """Signed callback POSTs of a callback's size to one receiver."""

    def __init__(self, sink: SplitResult) -> None:
        self._head = (
            f"POST {sink.path or '/'} HTTP/1.1\r\nHost: {sink.netloc}\r\n"
            "User-Agent: dashpay-floor\r\nContent-Type: application/json\r\n"
            "Dashpay-Event: receiver.paid\r\nDashpay-Delivery: {delivery}\r\n"
            "Dashpay-Signature: t={stamp},v1={signature}\r\nContent-Length: {length}\r\n\r\n"
        )
        self._filler = "x" * CALLBACK_BODY_SIZE

    def request(self, i: int) -> bytes:
        """The ``i``-th POST: body signed with HMAC-SHA256 over the stamp and body."""
        stamp = int(time.time())
        body = orjson.dumps({"receiver_id": -1, "delivery": i, "padding": self._filler})
        signature = hmac.new(SECRET, b"%d." % stamp + body, hashlib.sha256).hexdigest()
        head = self._head.format(
            delivery=f"floor-{i}", stamp=stamp, signature=signature, length=len(body)
        )
        return head.encode() + body


async def _response(stream: trio.SocketStream, buffer: bytearray) -> bytes:
    """One HTTP/1.1 answer's body (status 200, Content-Length framing) from
    ``stream``; what follows it stays in ``buffer``."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        if len(buffer) > MAX_HEAD:
            raise BenchError("an answer's head is over 64 KiB")
        await _fill(stream, buffer)
    head = bytes(buffer[:end]).lower()
    if not head.startswith(b"http/1.1 200"):
        raise BenchError(f"floor request answered {head[:40]!r}")
    marker = head.find(b"content-length:")
    if marker < 0:
        raise BenchError("an answer without Content-Length (the floor reads no chunks)")
    line_end = head.find(b"\r\n", marker)
    length = int(head[marker + 15 : line_end if line_end >= 0 else len(head)].strip())
    total = end + 4 + length
    while len(buffer) < total:
        await _fill(stream, buffer)
    body = bytes(buffer[end + 4 : total])
    del buffer[:total]
    return body


async def _fill(stream: trio.SocketStream, buffer: bytearray) -> None:
    data = await stream.receive_some(262144)
    if not data:
        raise BenchError("the connection closed mid-answer")
    buffer += data
