"""ingest: non-matching ``tx`` events through the websocket, socket -> parse -> lookup.

The peer writes ``events`` frames of ``tx`` events with two outputs to addresses
nobody watches, as fast as the daemon's socket takes them (TCP back-pressure, nothing
dropped). The rate is events counted by the engine (``status`` -> ``engine.events``)
divided by the time from the peer's first write to the ``status`` answer that shows
them all; ``status`` is only polled once the peer has written everything, so it does
not compete with the daemon during the flood. CPU per event is the daemon's own CPU
time (/proc) over the same span, divided by the events.

The floor, measured in the same run on the same peer right after the daemon's flood:
a minimal reader (``python -m benchmarks.ingest --floor-reader``, its own process) that
subscribes like the daemon and is sent a flood of its own (``session``: the daemon does
not see it) of the same kind and size. Its loop is the least any reader of these frames
can do in Python on trio: ``receive_some(256 KiB)``, split the unmasked text frames
(7- and 16-bit lengths only), ``orjson.loads`` each payload from a memoryview of the
read, and look every output address up in a set as big as the daemon's pending table;
nothing else (no checks, no counters, no protocol). Its CPU (``time.process_time``, the
same user + system as /proc) from subscription to its last event, per event, is
``floor_cpu_us_per_event``; ``cpu_to_floor`` = the daemon's figure / the floor's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from benchmarks.harness import (
    PYTHON,
    REPO,
    BenchError,
    Peer,
    child_env,
    proc_cpu_seconds,
    ratio,
    settle,
)
from benchmarks.runner import Case, Options, Target
from benchmarks.stack import daemon_stack

DESCRIPTION = "non-matching tx events (2 outputs) absorbed by a running daemon"
SHOWN = (
    "events_per_second",
    "events_per_cpu_second",
    "cpu_us_per_event",
    "floor_cpu_us_per_event",
    "cpu_to_floor",
    "cpu_us_per_event_net",
    "ready_seconds",
)
# Shown in the report table besides the targets.
REPORT_EXTRA = (
    "events_per_cpu_second",
    "cpu_us_per_event",
    "floor_cpu_us_per_event",
    "cpu_to_floor",
    "cpu_us_per_event_net",
    "net_cpu_to_floor",
)
UNITS = {
    "events_per_second": "/s",
    "events_per_cpu_second": "/s",
    "cpu_us_per_event": "µs",
    "floor_cpu_us_per_event": "µs",
    "cpu_us_per_event_net": "µs",
}
NOTES = [
    "Events are counted once their outputs were looked up in the pending table "
    "(engine.events), i.e. after socket, Engine.IO decode, JSON parse and payload "
    "checks; an event that pays no watched address is counted at the socket "
    "(InsightSocket._read: tx_frame_pays_none, outputs tested with `in` against the "
    "engine's watched_addresses), with no Frame, outputs dict or observation built and "
    "without the channel to the engine.",
    "floor_cpu_us_per_event: a minimal trio reader of the same frames from the same "
    "peer in the same run (receive_some, frame split, orjson.loads, a set lookup per "
    "output, nothing else); cpu_to_floor = cpu_us_per_event / floor_cpu_us_per_event.",
    "cpu_us_per_event counts the daemon's whole CPU over the flood, the status polls "
    "that end it included; cpu_us_per_event_net takes out status_cpu_ms per poll (the "
    "mean of idle status calls right after): it matters at 1M pending, where a status "
    "call counts a million receivers.",
]
STATUS_POLL_SECONDS = 0.02
# Idle ``status`` calls after the flood whose mean CPU is taken as each poll's cost.
STATUS_PROBES = 3
# How long the flood may take before the run is declared broken (~2,000 events/s).
SECONDS_PER_EVENT_LIMIT = 1 / 2_000
ORIGINAL = {"events_per_second": 31_900, "cpu_us_per_event": 28}
# Issue 19's goal for the daemon's CPU per non-matching event.
CPU_US_PER_EVENT_GOAL = 5.0


def cases(options: Options) -> list[Case]:
    if options.quick:
        return [Case("200 pending", {"pending": 200, "events": 2_000, "outputs": 2})]
    targets = [
        Target("events_per_second", ">=", 32_000, floor=20_000),
        Target("cpu_us_per_event", "<=", CPU_US_PER_EVENT_GOAL),
    ]
    return [
        Case(
            "10k pending",
            {"pending": 10_000, "events": 200_000, "outputs": 2},
            targets,
            ORIGINAL,
        ),
        Case(
            "1M pending",
            {"pending": 1_000_000, "events": 200_000, "outputs": 2},
            [Target("events_per_second", ">=", 32_000, floor=20_000)],
        ),
    ]


def run(case: Case, options: Options) -> dict[str, Any]:
    pending, events = case.parameters["pending"], case.parameters["events"]
    limit = 30 + events * SECONDS_PER_EVENT_LIMIT
    with daemon_stack("sqlite", pending, mysql_url=None, insight_url=options.insight_url) as stack:
        daemon, peer = stack.daemon, stack.peer
        assert peer is not None
        settle(options.quick)
        before = daemon.status()["engine"]["events"]
        cpu_before = daemon.cpu_seconds()
        peer_cpu_before = proc_cpu_seconds(peer.pid) if peer.pid else None
        job = peer.flood(events, case.parameters["outputs"])
        written = peer.wait_job_written(job["job"], timeout=limit)
        first_write = min(d["first_write"] for d in written["deliveries"])
        all_written = max(d["done"] for d in written["deliveries"])
        status_calls = []
        deadline = time.monotonic() + limit
        while True:
            asked = time.monotonic()
            status = daemon.status()
            answered = time.monotonic()
            status_calls.append(answered - asked)
            counted = status["engine"]["events"] - before
            if counted >= events:
                break
            if answered > deadline:
                raise BenchError(f"only {counted} of {events} events counted in time")
            time.sleep(STATUS_POLL_SECONDS)
        cpu_after = daemon.cpu_seconds()
        # What one ``status`` costs the daemon by itself (it counts the receivers by
        # status: ~0.3 s of CPU at 1M pending), so it can be taken out of the flood's.
        for _ in range(STATUS_PROBES):
            daemon.status()
        status_cpu = (daemon.cpu_seconds() - cpu_after) / STATUS_PROBES
        rss = daemon.rss_bytes()
        peer_cpu = proc_cpu_seconds(peer.pid) if peer.pid else None
        floor = measure_floor(peer, events, case.parameters["outputs"], pending, limit)
    elapsed = answered - first_write
    cpu_us = (cpu_after - cpu_before) / events * 1e6
    net_us = max(cpu_after - cpu_before - len(status_calls) * status_cpu, 0) / events * 1e6
    result: dict[str, Any] = {
        "events": events,
        "events_counted": counted,
        "seconds": round(elapsed, 4),
        "events_per_second": round(events / elapsed, 1),
        "peer_write_seconds": round(all_written - first_write, 4),
        "cpu_us_per_event": round(cpu_us, 2),
        # What one core would absorb if the daemon had it to itself (robust to sharing).
        "events_per_cpu_second": ratio(events, cpu_after - cpu_before, 1),
        "daemon_cpu_share": round((cpu_after - cpu_before) / elapsed, 3),
        "ready_seconds": round(stack.ready_seconds or 0, 3),
        "rss_mb_after": round(rss / 1e6, 1) if rss else None,
        "frame_chars": written["frame_chars"],
        "status_polls": len(status_calls),
        "status_ms_max": round(max(status_calls) * 1000, 2),
        "rejected": status["insight"]["events_rejected"],
        "floor_cpu_us_per_event": floor["cpu_us_per_event"],
        "floor_events_per_second": floor["events_per_second"],
        "cpu_to_floor": ratio(cpu_us, floor["cpu_us_per_event"], 2),
        "status_cpu_ms": round(status_cpu * 1000, 1),
        "cpu_us_per_event_net": round(net_us, 2),
        "net_cpu_to_floor": ratio(net_us, floor["cpu_us_per_event"], 2),
    }
    if peer_cpu is not None and peer_cpu_before is not None:
        result["peer_cpu_us_per_event"] = round((peer_cpu - peer_cpu_before) / events * 1e6, 2)
    return result


# --- the floor: a minimal reader of the same frames ------------------------------------

# How long the floor reader may take to connect and subscribe.
FLOOR_START_SECONDS = 30.0


def measure_floor(peer: Peer, events: int, outputs: int, pending: int, limit: float) -> dict:
    """Run the minimal reader against ``peer`` with a flood of ``events`` of its own."""
    host, port = peer.host, peer.port
    command = [PYTHON, "-m", "benchmarks.ingest", "--floor-reader", host, str(port)]
    command += [str(events), str(pending)]
    reader = subprocess.Popen(
        command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=REPO, env=child_env(),
        text=True,
    )  # fmt: skip
    try:
        assert reader.stdout is not None
        line = reader.stdout.readline().split()
        if len(line) != 2 or line[0] != "SID":
            raise BenchError(f"the floor reader did not subscribe (said {' '.join(line)!r})")
        deadline = time.monotonic() + FLOOR_START_SECONDS
        while line[1] not in _sessions(peer):
            if time.monotonic() > deadline:
                raise BenchError("the peer did not see the floor reader subscribe")
            time.sleep(0.02)
        body = {"count": events, "outputs": outputs, "session": line[1]}
        job = peer.request("POST", "/bench/flood", body)
        written = peer.wait_job_written(job["job"], timeout=limit)
        out, _ = reader.communicate(timeout=limit)
        if reader.returncode:
            raise BenchError(f"the floor reader failed (exit {reader.returncode})")
        result = json.loads(out)
        first = written["deliveries"][0]["first_write"]
        result["events_per_second"] = round(events / (result["finished"] - first), 1)
        return result
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()


def _sessions(peer: Peer) -> list[str]:
    """The ids of the peer's subscribed sessions."""
    return peer.request("GET", "/bench/info").get("sessions", [])


def floor_reader(host: str, port: int, events: int, pending: int) -> int:
    """The floor's process: subscribe, print ``SID <sid>``, read ``events`` events, print
    the CPU they took as JSON."""
    import orjson
    import trio

    from dashpay.net.insight_socket import RECEIVE_BUFFER_BYTES, SOCKET_IO_PATH
    from dashpay.wire import websocket as wsframe

    # As many 34-character keys as the daemon watches (a miss costs the same whatever
    # they spell, and a million real addresses would take seconds to derive).
    watched = {f"y{index:033d}" for index in range(pending)}
    loads = orjson.loads

    async def main() -> dict:
        stream = await trio.open_tcp_stream(host, port)
        key = wsframe.new_key()
        resource = f"{SOCKET_IO_PATH}?EIO=3&transport=websocket"
        await stream.send_all(wsframe.handshake_request(host, port, resource, key, tls=False))
        buffer = b""
        while (split := wsframe.split_handshake_response(buffer)) is None:
            buffer += await stream.receive_some(65536)
        head, buffer = split
        wsframe.check_handshake_response(head, key)
        reader = wsframe.FrameReader(max_message_bytes=1 << 20)
        sid = None
        while sid is None:  # the open packet carries the sid; "40" follows it
            for message in reader.receive_data(buffer):
                if type(message) is str and message.startswith("0{"):
                    sid = loads(message[1:])["sid"]
            if sid is None:
                buffer = await stream.receive_some(65536)
        await stream.send_all(wsframe.encode_text('42["subscribe","inv"]'))
        print("SID", sid, flush=True)
        receive_some = stream.receive_some
        cpu = time.process_time()
        count = matched = 0  # a "40" still to come is a complete frame: skipped below
        rest = b""
        while count < events:
            chunk = await receive_some(RECEIVE_BUFFER_BYTES)
            if not chunk:
                raise ConnectionError(f"the peer closed the link after {count} events")
            data = rest + chunk
            view = memoryview(data)
            end = len(data)
            pos = 0
            while end - pos >= 4:
                size = data[pos + 1]
                start = pos + 2
                if size == 126:
                    size = (data[pos + 2] << 8) | data[pos + 3]
                    start = pos + 4
                stop = start + size
                if stop > end:
                    break
                if data[start] == 0x34 and data[start + 1] == 0x32:  # "42": an event
                    payload = loads(view[start + 2 : stop])[1]
                    for entry in payload["vout"]:
                        for address in entry:
                            if address in watched:
                                matched += 1
                    count += 1
                pos = stop
            rest = data[pos:]
        cpu = time.process_time() - cpu
        finished = time.monotonic()
        await stream.aclose()
        return {
            "events": count,
            "matched": matched,
            "cpu_seconds": round(cpu, 6),
            "cpu_us_per_event": round(cpu / count * 1e6, 3),
            "finished": finished,
        }

    print(json.dumps(trio.run(main)), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--floor-reader"]:
        host, port, count, size = sys.argv[2:6]
        sys.exit(floor_reader(host, int(port), int(count), int(size)))
    sys.exit("usage: python -m benchmarks.ingest --floor-reader HOST PORT EVENTS PENDING")
