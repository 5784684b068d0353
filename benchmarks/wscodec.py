"""wscodec: the client CPU per message of wsframe and of wsproto, driven by the same read loop.

Why it exists: the architecture issue keeps one websocket codec. wsproto may replace
our own ``dashpay/insight/wsframe.py`` (in the Insight client and the sandbox server)
only if, driven from the raw read loop of ``InsightSocket._read`` (no trio-websocket, no
task switch per message), its CPU per event is within 1.5x of wsframe's. The ingest
scenario measures the whole daemon (Engine.IO decode, JSON, lookup, engine), which
hides the codec in the rest; this one measures the read loop and the codec alone.

What runs, all on loopback:
- a **sender process** (so its CPU is not counted): ``flood_frames`` of the benchmark
  peer (``42["tx",{...}]``, 2 outputs, ~245 characters: what ingest floods), encoded
  once as unmasked server text frames and written 256 frames per ``sendall`` (as
  ``peer.py`` does) as fast as TCP takes them, after a real RFC 6455 server handshake;
- this **client process**, one fresh ``trio.run`` per run: the opening handshake done by
  the codec under test, then the loop shape of ``socketio.py``: ``receive_some(256 KiB)``,
  every message that read completes handed out by the codec, per message only the type
  check, the size check and a count (no Engine.IO, no JSON: those costs are the same
  for both codecs). Variants:
  - ``floor``: reads only, no decoding (what the socket and trio cost);
  - ``wsframe``: ``wsframe.FrameReader.receive_data`` -> a list of ``str``;
  - ``wsproto``: ``WSConnection(ConnectionType.CLIENT)``, ``receive_data`` + ``events()``,
    ``TextMessage`` pieces joined until ``message_finished`` (a read ends mid-frame,
    and wsproto hands out the partial payload), with the message size limit wsproto
    lacks checked by the loop.
  Before each timed loop the client sends one text frame, and only then does the sender
  flood, so the handshake is outside the measured span. The CPU is the client's
  ``time.process_time()`` over the timed loop (user + system: the kernel's share of
  receiving is the same for all variants), per message.

Runs are interleaved (the order rotates every round, after one discarded warm-up round)
so the machine's neighbours hit every variant alike; medians are reported, and the
ratio wsproto / wsframe both of the whole loop and of the codec alone (minus the floor).
How to read it: the difference per message (``extra_us_per_message_with_wsproto``) is
what the daemon pays on top of its ingest CPU per event (~11-15 us with wsframe), which
is the figure the rule is about; a codec swap in ``socketio.py`` measured with
``benchmarks/run ingest --source <patched tree>`` checks that prediction end to end.

    python -m benchmarks.wscodec [--messages 200000] [--runs 5] [--write]

JSON on stdout; ``--write`` also writes ``benchmarks/results/wscodec.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from benchmarks.harness import load_average, machine_info, median, ratio
from benchmarks.peer import WRITE_BATCH, flood_frames
from dashpay.net.insight_socket import HARD_LIMIT_FACTOR, RECEIVE_BUFFER_BYTES, SOCKET_IO_PATH
from dashpay.wire import websocket as wsframe
from dashpay.wire.engineio import MAX_FRAME_CHARS

REPO = Path(__file__).resolve().parent.parent
RESULTS_FILE = REPO / "benchmarks" / "results" / "wscodec.json"
VARIANTS = ("floor", "wsframe", "wsproto")
# The decision rule of the architecture issue: wsproto is kept if within this factor.
RULE_FACTOR = 1.5
RESOURCE = f"{SOCKET_IO_PATH}?EIO=3&transport=websocket"
# As in InsightSocket: the soft limit per message, and the hard one the codec enforces.
SOFT_LIMIT = MAX_FRAME_CHARS
HARD_LIMIT = MAX_FRAME_CHARS * HARD_LIMIT_FACTOR
# The sender gives up on a client that does not connect or read for this long.
SENDER_TIMEOUT = 120.0
SEED = 8  # the events are the same on every invocation
CLOSE_NORMAL_FRAME = b"\x88\x02\x03\xe8"  # server close frame, code 1000


# --- the sender (its own process) --------------------------------------------------------


def server_frame(text: str) -> bytes:
    """One unfragmented, unmasked text frame (RFC 6455 section 5.2), as a server sends it."""
    payload = text.encode("utf-8")
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


def _read_request_key(conn: socket.socket) -> str:
    """Read the upgrade request's head; return its Sec-WebSocket-Key."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("client closed during the handshake")
        head += chunk
    for line in head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-key":
            return value.strip()
    raise ConnectionError("upgrade request without Sec-WebSocket-Key")


def run_sender(messages: int, connections: int) -> int:
    """Serve ``connections`` clients one after the other, each the same ``messages``."""
    texts = flood_frames(messages, 2, random.Random(SEED))
    chunks = [
        b"".join(server_frame(text) for text in texts[start : start + WRITE_BATCH])
        for start in range(0, len(texts), WRITE_BATCH)
    ]
    total_bytes = sum(map(len, chunks))
    mean_chars = sum(map(len, texts)) / len(texts)
    del texts
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(SENDER_TIMEOUT)
        port = listener.getsockname()[1]
        print(f"PORT {port} BYTES {total_bytes} CHARS {mean_chars:.1f}", flush=True)
        for _ in range(connections):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(SENDER_TIMEOUT)
                try:
                    key = _read_request_key(conn)
                    conn.sendall(
                        b"HTTP/1.1 101 Switching Protocols\r\n"
                        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Accept: " + wsframe.accept_token(key).encode() + b"\r\n\r\n"
                    )
                    if not conn.recv(256):  # the client's "go" frame: the timed span starts
                        continue
                    for chunk in chunks:
                        conn.sendall(chunk)
                    conn.sendall(CLOSE_NORMAL_FRAME)
                    while conn.recv(65536):  # until the client hangs up
                        pass
                except OSError:
                    pass  # the client hung up first (it stops reading at its count)
    return 0


# --- the client variants --------------------------------------------------------------
#
# Each opens its own connection and handshake, then calls ``timed(loop)``; ``loop``
# is the measured read loop and returns (messages counted, reads).

Timed = Callable[[Callable[[], Awaitable[tuple[int, int]]]], Awaitable[None]]


async def _wsframe_handshake(stream: trio.SocketStream, port: int) -> bytes:
    """socketio.py's ``_open``: our request, the 101 checked; returns what followed it."""
    key = wsframe.new_key()
    await stream.send_all(wsframe.handshake_request("127.0.0.1", port, RESOURCE, key, tls=False))
    buffer = b""
    while (split := wsframe.split_handshake_response(buffer)) is None:
        chunk = await stream.receive_some(wsframe.MAX_HANDSHAKE_BYTES)
        if not chunk:
            raise ConnectionError("sender closed during the handshake")
        buffer += chunk
    head, rest = split
    wsframe.check_handshake_response(head, key)
    await stream.send_all(wsframe.encode_text("go"))
    return rest


async def client_floor(stream: trio.SocketStream, port: int, goal: dict, timed: Timed) -> None:
    """Reads only: the socket, trio and the loop, without any decoding."""
    rest = await _wsframe_handshake(stream, port)
    receive_some = stream.receive_some
    expected = goal["bytes"]

    async def loop() -> tuple[int, int]:
        received, reads = len(rest), 0
        while received < expected:
            data = await receive_some(RECEIVE_BUFFER_BYTES)
            if not data:
                break
            reads += 1
            received += len(data)
        return (goal["messages"] if received >= expected else 0), reads

    await timed(loop)


async def client_wsframe(stream: trio.SocketStream, port: int, goal: dict, timed: Timed) -> None:
    """The shape of ``InsightSocket._read``, up to where it hands a str to Engine.IO."""
    data = await _wsframe_handshake(stream, port)
    reader = wsframe.FrameReader(max_message_bytes=HARD_LIMIT)
    receive_data = reader.receive_data
    receive_some = stream.receive_some
    goal_messages = goal["messages"]

    async def loop() -> tuple[int, int]:
        nonlocal data
        count = rejected = reads = 0
        while True:
            if data:
                for message in receive_data(data):
                    if type(message) is not str:
                        if type(message) is wsframe.PingReceived:
                            await stream.send_all(reader.data_to_send())
                            continue
                        if type(message) in (wsframe.CloseReceived, wsframe.Failure):
                            return count, reads
                        continue
                    if len(message) > SOFT_LIMIT:
                        rejected += 1
                        continue
                    count += 1
                if count >= goal_messages:
                    return count, reads
            data = await receive_some(RECEIVE_BUFFER_BYTES)
            if not data:
                return count, reads
            reads += 1

    await timed(loop)


async def client_wsproto(stream: trio.SocketStream, port: int, goal: dict, timed: Timed) -> None:
    """The same loop with wsproto as the codec, its own handshake (h11) included."""
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=f"127.0.0.1:{port}", target=RESOURCE)))
    accepted = False
    while not accepted:
        chunk = await stream.receive_some(wsframe.MAX_HANDSHAKE_BYTES)
        if not chunk:
            raise ConnectionError("sender closed during the handshake")
        ws.receive_data(chunk)
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                accepted = True
            elif isinstance(event, RejectConnection):
                raise ConnectionError(f"upgrade refused: HTTP {event.status_code}")
    await stream.send_all(ws.send(TextMessage(data="go")))
    receive_data = ws.receive_data
    events = ws.events
    receive_some = stream.receive_some
    goal_messages = goal["messages"]

    async def loop() -> tuple[int, int]:
        count = rejected = reads = 0
        parts: list[str] = []  # a message's pieces while a read ended inside it
        pending = 0
        while True:
            data = await receive_some(RECEIVE_BUFFER_BYTES)
            if not data:
                return count, reads
            reads += 1
            receive_data(data)
            for event in events():
                if type(event) is TextMessage:
                    text = event.data
                    if not event.message_finished:
                        parts.append(text)
                        pending += len(text)
                        if pending > HARD_LIMIT:  # what wsframe's 1009 does, wsproto lacks
                            return count, reads
                        continue
                    if parts:
                        parts.append(text)
                        text = "".join(parts)
                        parts = []
                        pending = 0
                    if len(text) > SOFT_LIMIT:
                        rejected += 1
                        continue
                    count += 1
                elif type(event) is Ping:
                    await stream.send_all(ws.send(event.response()))
                elif type(event) is CloseConnection:
                    return count, reads
                elif type(event) is BytesMessage:
                    rejected += 1
            if count >= goal_messages:
                return count, reads

    await timed(loop)


CLIENTS = {"floor": client_floor, "wsframe": client_wsframe, "wsproto": client_wsproto}


def run_client(variant: str, port: int, goal: dict) -> dict[str, Any]:
    """One measured connection in a fresh trio.run; the client's CPU over the timed loop."""
    result: dict[str, Any] = {}

    async def timed(loop: Callable[[], Awaitable[tuple[int, int]]]) -> None:
        gc.collect()  # garbage of the previous run is not collected inside this one
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu, wall = time.process_time(), time.perf_counter()
        count, reads = await loop()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_SELF)
        if count < goal["messages"]:
            raise RuntimeError(f"{variant}: only {count} of {goal['messages']} messages")
        result.update(
            messages=count,
            reads=reads,
            cpu_seconds=round(cpu, 6),
            user_seconds=round(after.ru_utime - usage.ru_utime, 6),
            system_seconds=round(after.ru_stime - usage.ru_stime, 6),
            wall_seconds=round(wall, 6),
            cpu_us_per_message=round(cpu / count * 1e6, 4),
            messages_per_cpu_second=round(count / cpu, 1),
            messages_per_second=round(count / wall, 1),
            messages_per_read=round(count / max(reads, 1), 1),
        )

    async def main() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await CLIENTS[variant](stream, port, goal, timed)

    trio.run(main)
    return result


# --- the driver ---------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    medians: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        mine = [run for run in runs if run["variant"] == variant]
        if not mine:
            continue
        keys = [k for k, v in mine[0].items() if isinstance(v, int | float) and k != "round"]
        medians[variant] = {k: median([run[k] for run in mine]) for k in keys}
    cpu = {v: m["cpu_us_per_message"] for v, m in medians.items()}
    # Per round, so the two codecs of one round (same neighbours) are compared directly.
    by_round: dict[int, dict[str, float]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {})[run["variant"]] = run["cpu_us_per_message"]
    paired = [
        r["wsproto"] / r["wsframe"] for r in by_round.values() if {"wsproto", "wsframe"} <= r.keys()
    ]
    floor = cpu.get("floor")
    codec = {v: round(cpu[v] - floor, 4) for v in ("wsframe", "wsproto") if v in cpu and floor}
    whole = ratio(cpu.get("wsproto"), cpu.get("wsframe"))
    return {
        "medians": medians,
        "cpu_us_per_message": cpu,
        "codec_cpu_us_per_message": codec,  # the loop's figure minus the floor's
        "ratio_wsproto_over_wsframe": whole,
        "ratio_paired_median": round(median(paired), 3) if paired else None,
        "ratio_codec_only": ratio(codec.get("wsproto"), codec.get("wsframe")),
        "extra_us_per_message_with_wsproto": (
            round(cpu["wsproto"] - cpu["wsframe"], 4) if whole is not None else None
        ),
        "rule": {
            "factor": RULE_FACTOR,
            "wsproto_within": None if whole is None else whole <= RULE_FACTOR,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.wscodec",
        description="Client CPU per message of wsframe vs wsproto on loopback.",
    )
    parser.add_argument("--messages", type=int, default=200_000, help="messages per run")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per variant")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds first")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS_FILE}")
    parser.add_argument("--sender", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sender:
        return run_sender(args.messages, args.connections)
    variants = [v for v in args.variants.split(",") if v]
    if not variants or any(v not in CLIENTS for v in variants):
        parser.error(f"--variants takes some of {', '.join(VARIANTS)}")
    if args.messages < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--messages and --runs must be positive, --warmup not negative")

    rounds = args.warmup + args.runs
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    sender = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.wscodec",
            "--sender",
            "--messages",
            str(args.messages),
            "--connections",
            str(rounds * len(variants)),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    runs: list[dict[str, Any]] = []
    try:
        assert sender.stdout is not None
        line = sender.stdout.readline().split()
        if len(line) != 6 or line[0] != "PORT":
            raise RuntimeError(f"the sender did not start (said {' '.join(line)!r})")
        port, total_bytes, mean_chars = int(line[1]), int(line[3]), float(line[5])
        goal = {"messages": args.messages, "bytes": total_bytes}
        for number in range(rounds):
            shift = number % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                load = load_average()
                run = run_client(variant, port, goal)
                warm = number < args.warmup
                print(
                    f"{'warm-up' if warm else f'round {number - args.warmup + 1}'} "
                    f"{variant:8} {run['cpu_us_per_message']:8.3f} us/msg "
                    f"{run['messages_per_second']:>10,.0f} msg/s "
                    f"{run['messages_per_read']:6.1f} msg/read",
                    file=sys.stderr,
                    flush=True,
                )
                if not warm:
                    runs.append(
                        {
                            "variant": variant,
                            "round": number - args.warmup + 1,
                            **run,
                            "load_average": load,
                        }
                    )
        sender.wait(timeout=SENDER_TIMEOUT)
    finally:
        if sender.poll() is None:
            sender.terminate()
            sender.wait(timeout=10)

    output = {
        "benchmark": "wscodec",
        "description": "client CPU per message: raw trio read loop (256 KiB reads) + codec",
        "parameters": {
            "messages": args.messages,
            "runs": args.runs,
            "warmup_rounds": args.warmup,
            "variants": variants,
            "frame_chars_mean": round(mean_chars, 1),
            "frames_per_write": WRITE_BATCH,
            "receive_bytes": RECEIVE_BUFFER_BYTES,
        },
        "machine": machine_info(),
        **summarize(runs),
        "runs": runs,
    }
    text = json.dumps(output, indent=2)
    print(text)
    if args.write:
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        tmp = RESULTS_FILE.with_suffix(".json.tmp")
        tmp.write_text(text + "\n")
        tmp.replace(RESULTS_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
