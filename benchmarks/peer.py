"""The benchmark peer: an Insight server in its own process that benchmarks can drive.

Why a process of its own: the daemon must receive events over a real socket from
another process, as from a real Insight server, or the figures would measure a
shortcut. Why not plain ``dashpay serve --sandbox``: a benchmark needs to push
hundreds of thousands of events as fast as the daemon can take them and to know when
each one was written, which the sandbox's event fan-out (bounded buffers that drop a
slow subscriber) is not built for.

What it serves, on one port:
- Insight REST (``/insight-api/...``): the sandbox's ``InsightApp`` over a
  ``SandboxNetwork``, so rescans at (re)connect see the same chain as the events;
- the socket.io endpoint (``/socket.io/?EIO=3&transport=websocket``): its own Engine.IO
  v3 session speaking the real protocol (open packet, ``40``, ``2`` answered with
  ``3``, ``42["subscribe","inv"]``, events as ``42["tx",{...}]``); writes wait for the
  TCP socket (back-pressure), so no event is ever dropped and the rate measured is the
  rate the reader absorbs;
- ``/bench/...``: the control API the scenarios use (JSON in, JSON out):
  ``GET /bench/info``; ``POST /bench/flood {"count", "outputs"[, "session"]}``
  (non-matching ``tx`` events to random addresses, not recorded on the chain; to the
  one session ``session`` names, its ``sid``, when given); ``POST /bench/pay
  {"payments": [[address, duffs], ...]}`` (real sandbox payments, one ``tx`` event
  each, written as one burst); ``GET /bench/job/<id>`` (per subscriber: frames written,
  ``time.monotonic()`` of the first write and of the end; CLOCK_MONOTONIC is one clock
  for every process of the machine, so the driver compares it with its own readings).

Several daemons (dashpay and another processor) may subscribe at once: every job goes
to every subscribed session, which is how processors are compared on one peer.
Run on its own with ``benchmarks/run peer --port 3001``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import trio

from dashpay.domain.wallet import b58encode_check
from dashpay.sandbox.chain import SandboxError, js_dash_number
from dashpay.sandbox.http import (
    HttpRequest,
    HttpResponse,
    WebSocket,
    WebSocketClosed,
    serve_tcp,
)
from dashpay.sandbox.network import SandboxNetwork
from dashpay.sandbox.server import SOCKET_IO_PATH, InsightApp
from dashpay.wire import engineio as eio

log = logging.getLogger("benchmarks.peer")

# Frames per websocket write: ~75 kB of tx events, one syscall, while a ping answer
# still gets a turn between writes.
WRITE_BATCH = 256
# Addresses the non-matching events pay (testnet P2PKH, random): enough variety that
# no dict lookup is cached by accident, few enough to build in milliseconds.
FLOOD_ADDRESSES = 4096
# Largest flood one request may ask for: ~300 MB of frames held in memory at once.
MAX_FLOOD = 1_000_000
# Outputs per flood event: a tx has at least one, and 20 is already a payout batch.
MAX_FLOOD_OUTPUTS = 20
# Payments per /bench/pay request (each is a real sandbox transaction).
MAX_PAYMENTS = 100_000
# Engine.IO heartbeat the peer announces: engine.io's defaults.
PING_INTERVAL_MS = 25_000
PING_TIMEOUT_MS = 5_000
# Jobs kept for /bench/job look-ups; older ones are forgotten.
MAX_JOBS = 10_000
TESTNET_P2PKH = 0x8C

_JSON = "application/json"


def random_testnet_address(rng: random.Random) -> str:
    """A valid testnet P2PKH address nobody's wallet derives."""
    return b58encode_check(bytes([TESTNET_P2PKH]) + rng.randbytes(20))


def flood_frames(count: int, outputs: int, rng: random.Random) -> list[str]:
    """``count`` encoded ``tx`` events with ``outputs`` outputs each to random addresses
    (unique txids), as Insight sends them: ~284 characters with two outputs."""
    pool = [random_testnet_address(rng) for _ in range(FLOOD_ADDRESSES)]
    frames = []
    for _ in range(count):
        vout = [{rng.choice(pool): rng.randrange(100_000, 10_000_000_000)} for _ in range(outputs)]
        total = sum(duffs for entry in vout for duffs in entry.values())
        payload = {
            "txid": rng.randbytes(32).hex(),
            "valueOut": js_dash_number(total),
            "vout": vout,
            "isRBF": False,
            "txlock": False,
        }
        frames.append(eio.encode_event("tx", payload))
    return frames


@dataclass(slots=True)
class Delivery:
    """One job's progress on one subscribed session."""

    session: str
    written: int = 0
    first_write: float | None = None  # time.monotonic()
    done: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "written": self.written,
            "first_write": self.first_write,
            "done": self.done,
            "error": self.error,
        }


@dataclass(slots=True)
class Job:
    job_id: int
    kind: str
    frames: list[str]
    deliveries: list[Delivery] = field(default_factory=list)
    txids: list[str] = field(default_factory=list)
    frame_chars: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "kind": self.kind,
            "count": len(self.frames),
            "frame_chars": self.frame_chars,
            "txids": self.txids,
            "deliveries": [d.as_dict() for d in self.deliveries],
        }


class _Session:
    """One Engine.IO v3 websocket session, socket.io 2 style."""

    def __init__(self, peer: BenchPeer, ws: WebSocket) -> None:
        self.peer = peer
        self.ws = ws
        self.sid = secrets.token_urlsafe(15)
        self.subscribed = False
        self.jobs_send, self.jobs = trio.open_memory_channel[tuple[Job, Delivery]](MAX_JOBS)

    async def run(self) -> None:
        try:
            await self.ws.send_texts(
                [eio.encode_open(self.sid, PING_INTERVAL_MS, PING_TIMEOUT_MS), eio.encode_connect()]
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_jobs)
                await self._read()
                nursery.cancel_scope.cancel()
        except WebSocketClosed:
            pass
        finally:
            self.peer.sessions.discard(self)
            self.jobs_send.close()
            log.info("session ended sid=%s", self.sid)

    async def _read(self) -> None:
        while True:
            try:
                message = await self.ws.receive()
            except WebSocketClosed:
                return
            if not isinstance(message, str):
                continue
            try:
                frame = eio.decode_frame(message)
            except eio.MalformedFrame:
                continue
            if isinstance(frame, eio.PingFrame):
                await self.ws.send_texts([eio.encode_pong(frame.data)])
            elif isinstance(frame, eio.CloseFrame):
                return
            elif isinstance(frame, eio.EventFrame) and frame.args and frame.args[0] == "inv":
                if frame.name == "subscribe" and not self.subscribed:
                    self.subscribed = True
                    self.peer.sessions.add(self)
                    log.info("session subscribed sid=%s", self.sid)
                elif frame.name == "unsubscribe":
                    self.subscribed = False
                    self.peer.sessions.discard(self)

    async def _write_jobs(self) -> None:
        send = self.ws.send_texts
        async for job, delivery in self.jobs:
            frames = job.frames
            try:
                for start in range(0, len(frames), WRITE_BATCH):
                    chunk = frames[start : start + WRITE_BATCH]
                    if delivery.first_write is None:
                        delivery.first_write = time.monotonic()
                    await send(chunk)
                    delivery.written += len(chunk)
            except WebSocketClosed as exc:
                delivery.error = str(exc)
                return
            finally:
                delivery.done = time.monotonic()


class BenchPeer:
    """The HTTP app: Insight REST from the sandbox, our socket.io sessions, /bench."""

    def __init__(self, network: SandboxNetwork, *, seed: int | None = None) -> None:
        self.network = network
        self.insight = InsightApp(network)
        self.sessions: set[_Session] = set()
        self.jobs: dict[int, Job] = {}
        self._next_job = 1
        self._rng = random.Random(seed)

    # -- HttpApp
    def handle(self, request: HttpRequest) -> HttpResponse:
        path = urlsplit(request.target).path
        if not path.startswith("/bench/"):
            return self.insight.handle(request)
        try:
            return self._bench(request, path)
        except _BadRequest as exc:
            return _reply({"error": str(exc)}, 400)

    def upgrade(self, request: HttpRequest):
        parts = urlsplit(request.target)
        query = dict(parse_qsl(parts.query))
        if (
            parts.path.startswith(SOCKET_IO_PATH)
            and query.get("transport") == "websocket"
            and not query.get("sid")
        ):
            return self._session
        return self.insight.upgrade(request)  # the sandbox's refusals

    async def _session(self, ws: WebSocket) -> None:
        await _Session(self, ws).run()

    # -- /bench
    def _bench(self, request: HttpRequest, path: str) -> HttpResponse:
        route = path.removeprefix("/bench/").strip("/").split("/")
        if request.method == "GET" and route == ["info"]:
            return _reply(
                {
                    "subscribed": len(self.sessions),
                    "sessions": sorted(session.sid for session in self.sessions),
                    "height": self.network.chain.height,
                    "jobs": len(self.jobs),
                }
            )
        if request.method == "GET" and len(route) == 2 and route[0] == "job":
            job = self.jobs.get(_int(route[1], "job id"))
            if job is None:
                return _reply({"error": f"no job {route[1]}"}, 404)
            return _reply(job.as_dict())
        if request.method == "POST" and route == ["flood"]:
            body = _body(request)
            count = _int(body.get("count"), "count", 1, MAX_FLOOD)
            outputs = _int(body.get("outputs", 2), "outputs", 1, MAX_FLOOD_OUTPUTS)
            session = body.get("session")
            if session is not None and not any(s.sid == session for s in self.sessions):
                raise _BadRequest(f"no subscribed session {session!r}")
            frames = flood_frames(count, outputs, self._rng)
            return _reply(self._start("flood", frames, session).as_dict())
        if request.method == "POST" and route == ["pay"]:
            return _reply(self._pay(_body(request)).as_dict())
        return _reply({"error": f"no route {request.method} {path}"}, 404)

    def _pay(self, body: dict[str, Any]) -> Job:
        payments = body.get("payments")
        if not isinstance(payments, list) or not 1 <= len(payments) <= MAX_PAYMENTS:
            raise _BadRequest(f"payments must be a list of 1 to {MAX_PAYMENTS} [address, duffs]")
        chain = self.network.chain
        frames, txids = [], []
        for pair in payments:
            try:
                tx = chain.pay([tuple(pair)])
            except (SandboxError, TypeError, ValueError) as exc:
                raise _BadRequest(f"payment {pair!r}: {exc}") from None
            frames.append(eio.encode_event("tx", chain.tx_event_payload(tx, txlock=False)))
            txids.append(tx.txid)
        job = self._start("pay", frames)
        job.txids = txids
        return job

    def _start(self, kind: str, frames: list[str], session: str | None = None) -> Job:
        """Queue ``frames`` for every subscribed session, or only the one ``session``
        names (a floor reader measured beside a daemon that must not see its flood)."""
        job = Job(self._next_job, kind, frames)
        job.frame_chars = round(sum(map(len, frames)) / len(frames)) if frames else 0
        self._next_job += 1
        self.jobs[job.job_id] = job
        if len(self.jobs) > MAX_JOBS:
            self.jobs.pop(next(iter(self.jobs)))
        for subscriber in list(self.sessions):
            if session is not None and subscriber.sid != session:
                continue
            delivery = Delivery(subscriber.sid)
            try:
                subscriber.jobs_send.send_nowait((job, delivery))
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                delivery.error = "session closed or too many queued jobs"
            job.deliveries.append(delivery)
        return job


class _BadRequest(Exception):
    pass


def _reply(value: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, json.dumps(value).encode(), _JSON)


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        value = json.loads(request.body or b"{}")
    except ValueError as exc:
        raise _BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _BadRequest("the body must be a JSON object")
    return value


def _int(value: Any, what: str, low: int = 0, high: int = 2**62) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _BadRequest(f"{what} must be an integer from {low} to {high}, got {value!r}")
    return value


async def serve_peer(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    seed: int | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a benchmark peer until cancelled; ``task_status`` receives the port."""
    network = SandboxNetwork()
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        bound = await nursery.start(
            partial(serve_tcp, BenchPeer(network, seed=seed), host=host, port=port)
        )
        task_status.started(bound)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run peer", description="Serve a benchmark Insight peer on loopback."
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random events")
    args = parser.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("::1", "localhost"):
        parser.error("the peer only listens on loopback (127.0.0.0/8 or ::1)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s peer %(message)s")

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_peer, args.host, args.port, seed=args.seed))
            # The driver reads this line to learn the port.
            print(f"PORT {port}", flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
