"""Checkout pages left open: many SSE streams from one lean process (`python -m
benchmarks.watchers HOST PORT`), for the checkout scenario.

One trio task and one raw socket per stream, no HTTP library: each sends the GET of
`/pay/<token>/events` from its own loopback source address (the page's rate limit is
per client, as it would be for customers), then only counts the `event: state` frames
that arrive. The first frame is the page's current state; the time of the second is
when that page saw the receiver change (wall-clock epoch seconds, the clock of the
daemon's own log stamps, so the two subtract on one machine).

Protocol with the harness, one JSON line each way at a time: stdin
``{"streams": [[token, source_address], ...]}``; stdout ``{"opened": n, "failed":
[...], "seconds": s}`` once every stream has its first frame (or failed); then, on
the stdin line ``stop``, ``{"seen": [time or null, ...], "frames": [...], "closed":
n}`` in the order of the streams, and the process exits.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

import trio

from dashpay.daemon.openfiles import raise_open_files

MARK = b"event: state"
# Connections being opened at once: the server's listen backlog is 1,024, and a burst
# of SYNs past it is retried after a second.
OPENING_AT_ONCE = 64
OPEN_TIMEOUT = 120.0
READ_SIZE = 65536
# Descriptors to ask for when the hard limit is unlimited (a finite one is taken whole).
OPEN_FILES = 65_536


@dataclass(slots=True, eq=False)  # hashable: a CapacityLimiter borrower
class Watcher:
    token: str
    source: str
    frames: int = 0
    seen_at: float | None = None  # the second frame (the first change)
    closed: bool = False
    error: str | None = None


async def watch(
    watcher: Watcher,
    host: str,
    port: int,
    opening: trio.CapacityLimiter,
    opened: trio.Event,
) -> None:
    """Follow one stream until cancelled; ``opened`` is set at its first frame (or
    when it failed). ``opening`` is held until then."""
    await opening.acquire_on_behalf_of(watcher)
    try:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        await sock.bind((watcher.source, 0))
        await sock.connect((host, port))
        stream = trio.SocketStream(sock)
        request = (
            f"GET /pay/{watcher.token}/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        )
        await stream.send_all(request.encode("ascii"))
        await _read(watcher, stream, opened)
    except OSError as exc:
        watcher.error = f"{type(exc).__name__}: {exc}"
    finally:
        opened.set()


async def _read(watcher: Watcher, stream: trio.SocketStream, opened: trio.Event) -> None:
    """Count frames until the server closes; ``opened.set()`` releases the opening
    slot (see ``main_async``)."""
    tail = b""
    head = True
    async with stream:
        while True:
            data = await stream.receive_some(READ_SIZE)
            if not data:
                watcher.closed = True
                return
            if head:
                head = False
                if not data.startswith(b"HTTP/1.1 200"):
                    watcher.error = data.split(b"\r\n", 1)[0].decode("latin-1")
                    return
            # A mark may be split between two reads: keep its length minus one byte.
            buffer = tail + data
            found = buffer.count(MARK)
            tail = buffer[-(len(MARK) - 1) :]
            if not found:
                continue
            watcher.frames += found
            if watcher.seen_at is None and watcher.frames >= 2:
                watcher.seen_at = time.time()
            opened.set()


async def main_async(host: str, port: int) -> None:
    request = json.loads(await trio.to_thread.run_sync(sys.stdin.readline))
    watchers = [Watcher(token, source) for token, source in request["streams"]]
    opening = trio.CapacityLimiter(OPENING_AT_ONCE)
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        events = []
        for watcher in watchers:
            opened = trio.Event()
            events.append(opened)
            nursery.start_soon(watch, watcher, host, port, opening, opened)
            nursery.start_soon(_release_when, opened, opening, watcher)
        with trio.move_on_after(OPEN_TIMEOUT):
            for opened in events:
                await opened.wait()
        failed = [w.error or "no first frame" for w in watchers if w.error or not w.frames]
        opened_count = sum(1 for w in watchers if w.frames and not w.error)
        _say({"opened": opened_count, "failed": failed[:20], "seconds": time.monotonic() - started})
        while (await trio.to_thread.run_sync(sys.stdin.readline)).strip() not in ("stop", ""):
            pass
        nursery.cancel_scope.cancel()
    _say(
        {
            "seen": [w.seen_at for w in watchers],
            "frames": [w.frames for w in watchers],
            "closed": sum(1 for w in watchers if w.closed),
            "errors": [w.error for w in watchers if w.error][:20],
        }
    )


async def _release_when(opened: trio.Event, opening: trio.CapacityLimiter, owner: Watcher) -> None:
    await opened.wait()
    opening.release_on_behalf_of(owner)


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    raise_open_files(OPEN_FILES)
    trio.run(main_async, argv[0], int(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
