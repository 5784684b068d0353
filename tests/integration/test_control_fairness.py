"""Sharing the control socket under abuse, on a real Unix socket: one local user holding
hundreds of connections must not lock the others out (issue 14, item 3).

The abuser here is this test process itself, so abuser and victim share a uid and only
eviction of the longest-idle connection can make room; the tests that need a second
uid run a stdlib-only client as ``nobody`` (we are root in the test container; they
skip elsewhere).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from dashpay.domain.errors import METHOD_NOT_FOUND, DashpayError
from dashpay.domain.limits import MAX_CONTROL_CONNECTIONS
from dashpay.net.control_server import serve_control
from dashpay.wire.jsonrpc import MAX_RESPONSE_BYTES, LineBuffer, RemoteError, encode_request
from tests.integration.test_control_server import blocking_call

GOOD_CALL_BUDGET = 2.0  # seconds a good client may take while an abuser holds connections
NOBODY = 65534
SYSTEM_PYTHON = Path("/usr/bin/python3")  # readable by nobody, unlike a venv under /root

# Holds N connections as its own uid: connects them all, says "connected", waits for a
# line on stdin, then makes one echo call on each and prints how many were answered.
OTHER_UID_CLIENT = r"""
import json, socket, sys
path, n = sys.argv[1], int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    socks.append(s)
print("connected", flush=True)
sys.stdin.readline()
answered = 0
for i, s in enumerate(socks):
    s.settimeout(5)
    try:
        s.sendall(json.dumps({"jsonrpc": "2.0", "id": i, "method": "echo",
                              "params": {"i": i}}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        if json.loads(data).get("result") == {"i": i}:
            answered += 1
    except (OSError, ValueError):
        pass
print(answered, flush=True)
"""


class Handler:
    def __init__(self) -> None:
        self.sleeping = 0

    async def __call__(self, method: str, params: dict[str, Any]) -> Any:
        if method == "echo":
            return params
        if method == "sleep":
            self.sleeping += 1
            try:
                await trio.sleep(float(params["seconds"]))
            finally:
                self.sleeping -= 1
            return "slept"
        raise DashpayError(METHOD_NOT_FOUND, f"unknown method {method!r}")


@pytest.fixture
def handler() -> Handler:
    return Handler()


async def start(nursery: trio.Nursery, path: Path, handler: Handler, **options: Any) -> None:
    await nursery.start(partial(serve_control, path, handler, **options))


async def good_call(path: Path) -> float:
    """A well-behaved client's round trip, on a fresh connection: answered, quickly."""
    started = time.monotonic()
    result = await trio.to_thread.run_sync(blocking_call, path, "echo", {"hello": "world"})
    assert result == {"hello": "world"}
    elapsed = time.monotonic() - started
    assert elapsed < GOOD_CALL_BUDGET
    return elapsed


async def open_many(path: Path, n: int) -> list[trio.SocketStream]:
    streams = []
    for _ in range(n):
        streams.append(await trio.open_unix_socket(os.fspath(path)))
        await trio.sleep(0)  # let the server accept in step
    return streams


async def closed_by_server(streams: list[trio.SocketStream], wait: float = 0.5) -> list[bool]:
    """Which of ``streams`` the server has closed (EOF or reset within ``wait``)."""
    closed = [False] * len(streams)

    async def check(i: int) -> None:
        with trio.move_on_after(wait):
            try:
                data = await streams[i].receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            closed[i] = data == b""

    async with trio.open_nursery() as inner:
        for i in range(len(streams)):
            inner.start_soon(check, i)
    return closed


async def close_all(streams: list[trio.SocketStream]) -> None:
    for stream in streams:
        await trio.aclose_forcefully(stream)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# -- one uid ----------------------------------------------------------------------------


async def test_300_idle_connections_do_not_lock_out_a_fresh_client_of_the_same_uid(
    nursery, sock_path, handler, caplog
):
    caplog.set_level(logging.INFO, logger="dashpay.control")
    # Timeouts far beyond the test: only eviction can make room, not an idle timeout.
    await start(nursery, sock_path, handler, keepalive_timeout=60, pressure_timeout=60)
    abuser = await open_many(sock_path, 300)

    for _ in range(5):
        await good_call(sock_path)

    closed = await closed_by_server(abuser)
    # One uid holds at most its share; the longest-idle went first, the newest stay.
    share = MAX_CONTROL_CONNECTIONS // 2
    assert sum(closed) >= 300 - share
    assert all(closed[: 300 - share])
    assert not any(closed[-share + 10 :])

    # Hundreds of evictions, a handful of warning lines.
    lines = warnings_of(caplog)
    assert sum("evicted" in line for line in lines) <= 3
    await trio.sleep(1.1)
    abuser += await open_many(sock_path, 2)  # the share is full again: evictions
    await trio.sleep(0.05)
    evicted = [line for line in warnings_of(caplog) if "evicted" in line]
    assert any("similar in the last" in line for line in evicted), evicted
    await close_all(abuser)


async def test_idle_connections_get_a_short_timeout_under_pressure(nursery, sock_path, handler):
    # 8 connections, pressure from 4 on; the usual keep-alive is far beyond the test.
    await start(
        nursery, sock_path, handler, max_connections=8, keepalive_timeout=60, pressure_timeout=0.5
    )
    calm = await open_many(sock_path, 2)
    assert not any(await closed_by_server(calm, wait=1.0))  # no pressure: they stay

    started = trio.current_time()
    crowd = calm + await open_many(sock_path, 2)  # 4 of 8: pressure
    with trio.fail_after(3):
        while not all(await closed_by_server(crowd, wait=0.1)):
            pass
    # The two that were idle for a second already go at once; the new two after 0.5 s.
    assert trio.current_time() - started < 2.0
    await good_call(sock_path)
    await close_all(crowd)


async def test_busy_connections_are_never_evicted_and_a_full_share_is_refused_clearly(
    nursery, sock_path, handler
):
    await start(nursery, sock_path, handler, max_connections=8)
    busy = []
    for n in range(1, 5):  # the uid's share: 4 of 8, each answering a slow request
        stream = await trio.open_unix_socket(os.fspath(sock_path))
        await stream.send_all(encode_request(n, "sleep", {"seconds": 1.0}))
        busy.append(stream)
        with trio.fail_after(2):
            while handler.sleeping < n:
                await trio.sleep(0.01)

    with pytest.raises(RemoteError) as info:
        await trio.to_thread.run_sync(blocking_call, sock_path, "echo", {})
    assert info.value.kind == "unavailable"
    assert "share of 4" in info.value.message

    buffer = LineBuffer(MAX_RESPONSE_BYTES)
    for stream in busy:  # none of them was cut off
        with trio.fail_after(3):
            while (line := buffer.next_line()) is None:
                buffer.feed(await stream.receive_some(65536))
        assert json.loads(line)["result"] == "slept"
    await good_call(sock_path)  # answered as soon as the share has an idle connection
    await close_all(busy)


# -- two uids ---------------------------------------------------------------------------


def other_uid_possible() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and SYSTEM_PYTHON.exists()


other_uid = pytest.mark.skipif(
    not other_uid_possible(), reason="needs root and /usr/bin/python3 to run a client as nobody"
)


async def start_shared(nursery, short_tmp: Path, path: Path, handler: Handler, **options) -> None:
    os.chmod(short_tmp, 0o755)  # nobody must reach the socket
    await start(nursery, path, handler, mode=0o666, **options)


class OtherUidClient:
    """OTHER_UID_CLIENT run as nobody, holding ``n`` connections."""

    def __init__(self, path: Path, n: int) -> None:
        self.path, self.n = path, n
        self.process: trio.Process | None = None
        self.buffer = LineBuffer(1024)

    async def __aenter__(self) -> OtherUidClient:
        self.process = await trio.lowlevel.open_process(
            [os.fspath(SYSTEM_PYTHON), "-c", OTHER_UID_CLIENT, os.fspath(self.path), str(self.n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=lambda: os.setuid(NOBODY),
            env={"PATH": "/usr/bin:/bin"},
        )
        assert await self.line() == "connected"
        return self

    async def line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        with trio.fail_after(20):
            while (line := self.buffer.next_line()) is None:
                chunk = await self.process.stdout.receive_some(1024)
                assert chunk, "the nobody client exited early"
                self.buffer.feed(chunk)
        return line.decode().strip()

    async def call_on_each(self) -> int:
        """Ask the client to call echo on each of its connections; how many answered."""
        assert self.process is not None and self.process.stdin is not None
        await self.process.stdin.send_all(b"go\n")
        return int(await self.line())

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.process is not None
        with trio.move_on_after(5):
            await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@other_uid
async def test_another_uid_keeps_its_idle_connections_while_one_uid_floods(
    nursery, short_tmp, sock_path, handler
):
    await start_shared(
        nursery, short_tmp, sock_path, handler, keepalive_timeout=60, pressure_timeout=60
    )
    flood = await open_many(sock_path, 300)
    async with OtherUidClient(sock_path, 100) as other:
        flood += await open_many(sock_path, 100)  # root goes on; nobody's 100 must stay
        assert await other.call_on_each() == 100
    await good_call(sock_path)
    await close_all(flood)


@other_uid
async def test_one_uid_with_every_connection_busy_leaves_the_other_share_free(
    nursery, short_tmp, sock_path, handler
):
    await start_shared(nursery, short_tmp, sock_path, handler, max_connections=16)
    busy = []
    for n in range(1, 13):  # 12 slow requests from root; its share is 8
        stream = await trio.open_unix_socket(os.fspath(sock_path))
        busy.append(stream)
        await stream.send_all(encode_request(n, "sleep", {"seconds": 5.0}))
        await trio.sleep(0.02)
    with trio.fail_after(2):
        while handler.sleeping < 8:
            await trio.sleep(0.01)
    await trio.sleep(0.1)
    assert handler.sleeping == 8  # the other 4 were refused: root's share is all busy

    started = time.monotonic()
    async with OtherUidClient(sock_path, 8) as other:
        assert await other.call_on_each() == 8
    assert time.monotonic() - started < 5.0
    await close_all(busy)
