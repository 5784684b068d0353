"""The control server on a real Unix socket, with the real blocking client and hostile
raw-socket clients. Every hostile-client test also proves a good client keeps getting
answers while the hostile one misbehaves."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from dashpay.domain.errors import METHOD_NOT_FOUND, DashpayError, PermissionDenied
from dashpay.net.control_client import ControlClient, DaemonUnreachable
from dashpay.net.control_server import ControlSocketInUse, ControlSocketPathError, serve_control
from dashpay.wire.jsonrpc import (
    MAX_MESSAGE_BYTES,
    MAX_RESPONSE_BYTES,
    LineBuffer,
    MalformedReply,
    RemoteError,
    encode_request,
)

# Short timeouts keep the hostile-client tests fast; production values are seconds.
FAST = {"idle_timeout": 0.5, "keepalive_timeout": 5.0, "send_timeout": 0.5}
GOOD_CALL_BUDGET = 2.0  # seconds a good client may take while others misbehave


class Handler:
    """The test's daemon: a few methods exercising every outcome."""

    def __init__(self) -> None:
        self.notified: list[dict[str, Any]] = []

    async def __call__(self, method: str, params: dict[str, Any]) -> Any:
        if method == "echo":
            return params
        if method == "big":
            return "x" * int(params["size"])
        if method == "sleep":
            await trio.sleep(float(params["seconds"]))
            return "slept"
        if method == "notify":
            self.notified.append(params)
            return None
        if method == "boom":
            raise RuntimeError("kaboom")
        if method == "fail":
            raise DashpayError(params["kind"], "refused on purpose", **params.get("details", {}))
        if method == "nan":
            return {"value": float("nan")}
        raise DashpayError(METHOD_NOT_FOUND, f"unknown method {method!r}")


@pytest.fixture
def handler() -> Handler:
    return Handler()


async def start(nursery: trio.Nursery, path: Path, handler: Handler, **options: Any) -> None:
    await nursery.start(partial(serve_control, path, handler, **{**FAST, **options}))


def blocking_call(path: Path, method: str, params: dict | None = None, timeout: float = 5.0):
    with ControlClient(path, timeout=timeout) as client:
        return client.call(method, params)


async def good_call(path: Path) -> None:
    """A well-behaved client's round trip: answered, and quickly."""
    started = time.monotonic()
    result = await trio.to_thread.run_sync(blocking_call, path, "echo", {"hello": "world"})
    assert result == {"hello": "world"}
    assert time.monotonic() - started < GOOD_CALL_BUDGET


async def read_until_eof(stream: trio.SocketStream, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (fails on timeout)."""
    data = bytearray()
    with trio.fail_after(timeout):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # reset: the server closed with unread input
                break
            if not chunk:
                break
            data += chunk
    return bytes(data)


async def read_line(stream: trio.SocketStream, buffer: LineBuffer, timeout: float = 5.0) -> dict:
    with trio.fail_after(timeout):
        while (line := buffer.next_line()) is None:
            chunk = await stream.receive_some(65536)
            assert chunk, "server closed the connection"
            buffer.feed(chunk)
    return json.loads(line)


def lines_of(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.split(b"\n") if line]


# -- hostile clients ------------------------------------------------------------------


async def test_garbage_gets_parse_errors_and_the_connection_stays_usable(
    nursery, sock_path, handler
):
    await start(nursery, sock_path, handler)
    hostile = await trio.open_unix_socket(os.fspath(sock_path))
    await hostile.send_all(b"\x00\xffnot json at all\n{oops\n[1,2]\n")
    buffer = LineBuffer(MAX_RESPONSE_BYTES)
    replies = [await read_line(hostile, buffer) for _ in range(3)]
    assert [r["error"]["data"]["kind"] for r in replies] == [
        "parse_error",
        "parse_error",
        "invalid_request",
    ]
    assert [r["error"]["code"] for r in replies] == [-32700, -32700, -32600]
    assert all(r["id"] is None for r in replies)

    await good_call(sock_path)

    await hostile.send_all(encode_request(2, "echo", {"still": "here"}))
    assert await read_line(hostile, buffer) == {
        "jsonrpc": "2.0",
        "id": 2,
        "result": {"still": "here"},
    }
    await hostile.aclose()


async def test_one_mebibyte_line_without_newline_gets_too_large_and_is_closed(
    nursery, sock_path, handler
):
    await start(nursery, sock_path, handler)
    hostile = await trio.open_unix_socket(os.fspath(sock_path))
    sent = trio.Event()

    async def flood() -> None:
        # The server stops reading at the limit and closes: the send must break.
        with pytest.raises(trio.BrokenResourceError):
            await hostile.send_all(b'{"jsonrpc":"2.0","id":1,"method":"' + b"a" * 2**20)
        sent.set()

    nursery.start_soon(flood)
    await good_call(sock_path)
    with trio.fail_after(5):
        await sent.wait()
    replies = lines_of(await read_until_eof(hostile))
    assert len(replies) == 1
    assert replies[0]["id"] is None
    assert replies[0]["error"]["data"]["kind"] == "too_large"
    assert str(MAX_MESSAGE_BYTES) in replies[0]["error"]["message"]
    await good_call(sock_path)


async def test_half_a_line_then_silence_is_closed_after_idle_timeout(
    nursery, sock_path, handler, caplog
):
    caplog.set_level(logging.INFO, logger="dashpay.control")
    await start(nursery, sock_path, handler, idle_timeout=0.5)
    hostile = await trio.open_unix_socket(os.fspath(sock_path))
    started = trio.current_time()
    await hostile.send_all(b'{"jsonrpc":"2.0","id":1,"method":"ec')

    await good_call(sock_path)

    assert await read_until_eof(hostile) == b""  # closed without an answer
    elapsed = trio.current_time() - started
    assert 0.4 <= elapsed < 2.0
    assert "incomplete message" in caplog.text
    await good_call(sock_path)


async def test_trickling_one_byte_at_a_time_does_not_extend_the_idle_timeout(
    nursery, sock_path, handler
):
    await start(nursery, sock_path, handler, idle_timeout=0.5)
    hostile = await trio.open_unix_socket(os.fspath(sock_path))
    started = trio.current_time()
    closed_after = None
    with trio.move_on_after(3):
        for byte in b'{"jsonrpc":"2.0","id":1,"method":"echo"}' * 10:
            try:
                await hostile.send_all(bytes([byte]))
            except trio.BrokenResourceError:
                closed_after = trio.current_time() - started
                break
            await trio.sleep(0.05)
    assert closed_after is not None, "the slow client was never disconnected"
    assert closed_after < 1.5
    await good_call(sock_path)


async def test_client_that_never_reads_is_disconnected_without_blocking_others(
    nursery, sock_path, handler, caplog
):
    caplog.set_level(logging.INFO, logger="dashpay.control")
    await start(nursery, sock_path, handler, send_timeout=0.5)
    hostile = await trio.open_unix_socket(os.fspath(sock_path))
    flood = b"".join(encode_request(i, "big", {"size": 32 * 1024}) for i in range(500))

    async def send_flood() -> None:
        # Either all requests fit in the socket buffers, or the server's close breaks us.
        with contextlib.suppress(trio.BrokenResourceError):
            await hostile.send_all(flood)

    nursery.start_soon(send_flood)
    await trio.sleep(0.2)  # the server is now stuck writing to this client
    await good_call(sock_path)

    with trio.fail_after(5):
        while "not reading its responses" not in caplog.text:
            await trio.sleep(0.05)
    data = await read_until_eof(hostile)
    answered = [line for line in data.split(b"\n") if line]
    # It got what fit in the socket buffers (the last line may be cut), then EOF.
    assert len(answered) < 500
    await good_call(sock_path)


async def test_idle_connections_are_closed_after_the_keepalive_timeout(nursery, sock_path, handler):
    await start(nursery, sock_path, handler, max_connections=5, keepalive_timeout=0.5)
    idle = [await trio.open_unix_socket(os.fspath(sock_path)) for _ in range(5)]
    for stream in idle:
        assert await read_until_eof(stream, timeout=2) == b""
    await good_call(sock_path)


# -- requests and handlers ------------------------------------------------------------


async def test_pipelined_requests_are_answered_in_order(nursery, sock_path, handler):
    await start(nursery, sock_path, handler)
    stream = await trio.open_unix_socket(os.fspath(sock_path))
    await stream.send_all(
        encode_request(1, "sleep", {"seconds": 0.2})
        + encode_request("two", "echo", {"n": 2})
        + encode_request(3, "nope", {})
    )
    buffer = LineBuffer(MAX_RESPONSE_BYTES)
    replies = [await read_line(stream, buffer) for _ in range(3)]
    assert [r["id"] for r in replies] == [1, "two", 3]
    assert replies[0]["result"] == "slept" and replies[1]["result"] == {"n": 2}
    assert replies[2]["error"]["data"]["kind"] == "method_not_found"
    await stream.aclose()


async def test_notifications_are_executed_but_not_answered(nursery, sock_path, handler):
    await start(nursery, sock_path, handler)
    stream = await trio.open_unix_socket(os.fspath(sock_path))
    await stream.send_all(
        b'{"jsonrpc":"2.0","method":"notify","params":{"n":1}}\n'
        b'{"jsonrpc":"2.0","method":"boom"}\n'
        b"\n" + encode_request(5, "echo", {})
    )
    reply = await read_line(stream, LineBuffer(MAX_RESPONSE_BYTES))
    assert reply["id"] == 5  # the first answer is for the request, not the notifications
    assert handler.notified == [{"n": 1}]
    await stream.aclose()


async def test_handler_exception_becomes_internal_and_is_logged_with_traceback(
    nursery, sock_path, handler, caplog
):
    await start(nursery, sock_path, handler)
    with pytest.raises(RemoteError) as info:
        await trio.to_thread.run_sync(blocking_call, sock_path, "boom")
    assert info.value.kind == "internal" and info.value.code == -32603
    assert "kaboom" not in info.value.message  # internals stay in the log
    record = next(r for r in caplog.records if r.name == "dashpay.control")
    assert record.exc_info and "kaboom" in caplog.text
    await good_call(sock_path)


async def test_unserialisable_result_becomes_internal(nursery, sock_path, handler):
    await start(nursery, sock_path, handler)
    with pytest.raises(RemoteError) as info:
        await trio.to_thread.run_sync(blocking_call, sock_path, "nan")
    assert info.value.kind == "internal"


async def test_unknown_method_is_method_not_found(nursery, sock_path, handler):
    await start(nursery, sock_path, handler)
    with pytest.raises(RemoteError) as info:
        await trio.to_thread.run_sync(blocking_call, sock_path, "no.such.method")
    assert (info.value.kind, info.value.code) == ("method_not_found", -32601)
    assert "no.such.method" in info.value.message


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("invalid_params", -32602),
        ("method_not_found", -32601),
        ("internal", -32603),
        ("not_found", -32000),
        ("conflict", -32000),
        ("price_unavailable", -32000),
        ("unavailable", -32000),
    ],
)
async def test_dashpay_error_kinds_map_to_codes_with_details(
    nursery, sock_path, handler, kind, code
):
    await start(nursery, sock_path, handler)
    params = {"kind": kind, "details": {"receiver_id": "r_1"}}
    stream = await trio.open_unix_socket(os.fspath(sock_path))
    await stream.send_all(encode_request(1, "fail", params))
    reply = await read_line(stream, LineBuffer(MAX_RESPONSE_BYTES))
    assert reply["error"] == {
        "code": code,
        "message": "refused on purpose",
        "data": {"receiver_id": "r_1", "kind": kind},
    }
    await stream.aclose()
    with pytest.raises(RemoteError) as info:
        await trio.to_thread.run_sync(blocking_call, sock_path, "fail", params)
    assert (info.value.kind, info.value.code) == (kind, code)
    assert info.value.details == {"receiver_id": "r_1"}


async def test_slow_handler_is_answered_unavailable_after_request_timeout(
    nursery, sock_path, handler
):
    await start(nursery, sock_path, handler, request_timeout=0.3)
    with pytest.raises(RemoteError) as info:
        await trio.to_thread.run_sync(blocking_call, sock_path, "sleep", {"seconds": 5})
    assert info.value.kind == "unavailable" and "0.3" in info.value.message


# -- the client -----------------------------------------------------------------------


async def test_client_reuses_its_connection_for_several_calls(nursery, sock_path, handler, caplog):
    caplog.set_level(logging.DEBUG, logger="dashpay.control")
    await start(nursery, sock_path, handler)

    def three_calls() -> list[Any]:
        with ControlClient(sock_path) as client:
            started = time.monotonic()
            results = [client.call("echo", {"i": i}) for i in range(3)]
            assert time.monotonic() - started < 1.0
            return results

    assert await trio.to_thread.run_sync(three_calls) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert caplog.text.count("control connection opened") == 1


async def test_client_reconnects_after_the_server_closed_an_idle_connection(
    nursery, sock_path, handler
):
    await start(nursery, sock_path, handler, keepalive_timeout=0.2)

    def calls_with_a_pause() -> list[Any]:
        with ControlClient(sock_path) as client:
            first = client.call("echo", {"n": 1})
            time.sleep(0.6)  # the server drops the idle connection meanwhile
            return [first, client.call("echo", {"n": 2})]

    assert await trio.to_thread.run_sync(calls_with_a_pause) == [{"n": 1}, {"n": 2}]


async def test_client_timeout_says_what_timed_out_and_the_next_call_works(
    nursery, sock_path, handler
):
    await start(nursery, sock_path, handler)

    def slow_then_fast() -> tuple[str, Any]:
        with ControlClient(sock_path, timeout=0.3) as client:
            with pytest.raises(TimeoutError) as info:
                client.call("sleep", {"seconds": 2})
            return str(info.value), client.call("echo", {"ok": True})

    message, result = await trio.to_thread.run_sync(slow_then_fast)
    assert "sleep" in message and str(sock_path) in message and "0.3" in message
    assert result == {"ok": True}


async def test_client_refuses_a_response_over_the_limit(nursery, sock_path, handler):
    await start(nursery, sock_path, handler)
    with pytest.raises(MalformedReply) as info:
        await trio.to_thread.run_sync(
            partial(blocking_call, timeout=20), sock_path, "big", {"size": MAX_RESPONSE_BYTES}
        )
    assert "larger than" in info.value.message
    await good_call(sock_path)


async def test_client_refuses_to_send_a_request_over_the_limit(nursery, sock_path, handler):
    await start(nursery, sock_path, handler)
    with pytest.raises(RemoteError) as info:
        await trio.to_thread.run_sync(
            blocking_call, sock_path, "echo", {"blob": "x" * MAX_MESSAGE_BYTES}
        )
    assert info.value.kind == "too_large"


def test_missing_socket_is_daemon_unreachable_with_advice(short_tmp):
    path = short_tmp / "absent.sock"
    with pytest.raises(DaemonUnreachable) as info:
        blocking_call(path, "status")
    message = str(info.value)
    assert info.value.socket_path == path
    assert str(path) in message and "does not exist" in message
    assert "dashpay serve" in message and "--socket" in message


def test_refused_connection_is_daemon_unreachable(short_tmp):
    path = short_tmp / "stale.sock"
    _make_stale_socket(path)
    with pytest.raises(DaemonUnreachable) as info:
        blocking_call(path, "status")
    assert "connection refused" in info.value.reason
    assert str(path) in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
async def test_permission_denied_names_the_socket_and_its_mode(nursery, sock_path, handler):
    await start(nursery, sock_path, handler, mode=0o600)
    os.chmod(sock_path, 0o000)
    with pytest.raises(PermissionDenied) as info:
        await trio.to_thread.run_sync(blocking_call, sock_path, "status")
    assert f"permission denied on {sock_path}" in info.value.message
    assert "mode 0000" in info.value.message and info.value.exit_code == 6


# -- the socket file ------------------------------------------------------------------


def _make_stale_socket(path: Path) -> None:
    """A socket file nobody listens on: what a crashed daemon leaves behind."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(os.fspath(path))
    sock.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


async def test_socket_mode_is_0660_by_default(nursery, sock_path, handler):
    await start(nursery, sock_path, handler)
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    assert stat.S_IMODE(os.lstat(sock_path).st_mode) == 0o660


async def test_missing_parent_directory_is_created_0750(nursery, short_tmp, handler):
    path = short_tmp / "run" / "dashpay" / "c.sock"
    await start(nursery, path, handler, mode=0o600)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o750
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["c.sock"]  # no temporary left
    await good_call(path)


async def test_stale_socket_file_is_replaced(nursery, sock_path, handler):
    _make_stale_socket(sock_path)
    with pytest.raises(DaemonUnreachable):
        await trio.to_thread.run_sync(blocking_call, sock_path, "echo")
    await start(nursery, sock_path, handler)
    await good_call(sock_path)


async def test_live_server_at_the_path_is_not_replaced(nursery, sock_path, handler):
    await start(nursery, sock_path, handler)
    with pytest.raises(ControlSocketInUse) as info:
        await start(nursery, sock_path, handler)
    assert info.value.path == sock_path
    assert "another dashpay daemon is already serving" in str(info.value)
    assert str(sock_path) in str(info.value)
    await good_call(sock_path)  # the first server's socket is intact


async def test_regular_file_at_the_path_is_never_unlinked(nursery, sock_path, handler):
    sock_path.write_text("precious")
    with pytest.raises(ControlSocketPathError) as info:
        await start(nursery, sock_path, handler)
    assert "not a socket" in str(info.value)
    assert sock_path.read_text() == "precious"


async def test_overlong_socket_path_is_refused_clearly(nursery, short_tmp, handler):
    path = short_tmp / ("s" * 120)
    with pytest.raises(ControlSocketPathError) as info:
        await start(nursery, path, handler)
    assert "at most 107" in str(info.value)


async def test_socket_file_is_removed_on_shutdown(sock_path, handler):
    async with trio.open_nursery() as nursery:
        await start(nursery, sock_path, handler)
        await good_call(sock_path)
        nursery.cancel_scope.cancel()
    assert not sock_path.exists()


async def test_socket_file_of_a_successor_is_left_alone_on_shutdown(sock_path, handler):
    async with trio.open_nursery() as nursery:
        await start(nursery, sock_path, handler)
        os.unlink(sock_path)
        _make_stale_socket(sock_path)  # someone else's file now
        nursery.cancel_scope.cancel()
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)


async def test_open_connections_are_closed_on_shutdown(sock_path, handler):
    async with trio.open_nursery() as nursery:
        await start(nursery, sock_path, handler)
        stream = await trio.open_unix_socket(os.fspath(sock_path))
        await stream.send_all(encode_request(1, "echo", {}))
        await read_line(stream, LineBuffer(MAX_RESPONSE_BYTES))
        nursery.cancel_scope.cancel()
    assert await read_until_eof(stream) == b""


def test_a_refusal_sent_before_the_request_is_still_read():
    """A daemon at its connection limit writes why and closes without reading the
    request; when the client's send then fails, it reads that answer instead of
    reporting the daemon as unreachable (the race behind a flaky CI run)."""
    from dashpay.wire.jsonrpc import encode_error

    daemon_side, client_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    daemon_side.sendall(encode_error(None, "unavailable", "too many connections (limit 256)"))
    daemon_side.close()

    class Answered(ControlClient):
        def _connection(self, deadline: float) -> socket.socket:
            self._sock = client_side
            return client_side

    with (
        Answered("/nonexistent/control.sock", timeout=5) as client,
        pytest.raises(RemoteError) as info,
    ):
        client.call("echo", {"pad": "x" * (MAX_MESSAGE_BYTES // 2)})
    assert info.value.kind == "unavailable"
    assert "256" in info.value.message


def test_a_broken_connection_without_an_answer_is_still_unreachable():
    daemon_side, client_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    daemon_side.close()

    class Broken(ControlClient):
        def _connection(self, deadline: float) -> socket.socket:
            self._sock = client_side
            return client_side

    with (
        Broken("/nonexistent/control.sock", timeout=5) as client,
        pytest.raises(DaemonUnreachable) as info,
    ):
        client.call("echo", {})
    assert "broke while sending" in str(info.value)


async def test_the_socket_is_given_the_group_asked_for(nursery, sock_path, handler):
    import grp

    from dashpay.daemon.root import socket_group

    if os.geteuid() != 0:
        pytest.skip("giving a file to another group needs root")
    nogroup = grp.getgrnam("nogroup").gr_gid
    assert socket_group("nogroup") == nogroup  # root may give any existing group
    assert socket_group("no-such-group-here") is None  # then the file keeps its own
    await start(nursery, sock_path, handler, group=nogroup)
    info = os.stat(sock_path)
    assert (info.st_gid, info.st_mode & 0o777) == (nogroup, 0o660)
    await good_call(sock_path)
