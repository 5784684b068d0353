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
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from statistics import median
from urllib.parse import urlencode, urlsplit

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
    history = orjson.dumps({"addrs": address, "from": 0, "to": 50})
    readback = (
        f"POST {peer.path.rstrip('/')}/addrs/txs?{HISTORY_QUERY} HTTP/1.1\r\n"
        f"Host: {peer.netloc}\r\nUser-Agent: dashpay-floor\r\nAccept: application/json\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(history)}\r\n\r\n"
    ).encode() + history
    callback_head = (
        f"POST {sink.path or '/'} HTTP/1.1\r\nHost: {sink.netloc}\r\n"
        "User-Agent: dashpay-floor\r\nContent-Type: application/json\r\n"
        "Dashpay-Event: receiver.paid\r\nDashpay-Delivery: {delivery}\r\n"
        "Dashpay-Signature: t={stamp},v1={signature}\r\nContent-Length: {length}\r\n\r\n"
    )
    filler = "x" * CALLBACK_BODY_SIZE
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
            stamp = int(time.time())
            body = orjson.dumps({"receiver_id": -1, "delivery": i, "padding": filler})
            signature = hmac.new(SECRET, b"%d." % stamp + body, hashlib.sha256).hexdigest()
            head = callback_head.format(
                delivery=f"floor-{i}", stamp=stamp, signature=signature, length=len(body)
            )
            await receiver.send_all(head.encode() + body)
            await _response(receiver, sink_buffer)
            walls.append(time.monotonic() - started)
        cpu = (time.thread_time() - cpu_started) / count
    return {"cpu_ms": round(cpu * 1000, 4), "wall_ms": round((median(walls) or 0) * 1000, 3)}


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
