"""``DashdClient._read_zmq``, the one function that reads a pyzmq socket under trio, on
a real socket pair: every message queued while it was busy is read (the FD is
edge-triggered: EVENTS is asked before each wait), and between messages it sleeps in
``wait_readable`` instead of spinning (``wait_all_tasks_blocked`` returns only when no
task can run)."""

from __future__ import annotations

import trio
import trio.testing
import zmq

from dashpay.net.dashd import DashdClient


def client() -> DashdClient:
    return DashdClient(
        "http://127.0.0.1:9", "tcp://127.0.0.1:9", network="testnet", user="u", password="p"
    )


async def test_the_reader_drains_what_queued_up_and_then_sleeps():
    context = zmq.Context()
    reader_side, writer_side = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    reader_side.bind("inproc://reader")
    writer_side.connect("inproc://reader")
    got: list[bytes] = []
    slow = trio.Event()

    async def handle(frames: list[bytes]) -> None:
        got.append(frames[0])
        if len(got) == 1:
            await slow.wait()  # busy: the rest queue up behind the first

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client()._read_zmq, reader_side, handle)
            writer_side.send_multipart([b"0"])
            await trio.testing.wait_all_tasks_blocked()
            for n in range(1, 600):  # more than one READ_BURST
                writer_side.send_multipart([str(n).encode()])
            slow.set()
            with trio.fail_after(5):  # a reader that spins never lets this return
                await trio.testing.wait_all_tasks_blocked()
            assert got == [str(n).encode() for n in range(600)]
            writer_side.send_multipart([b"late"])  # a wake-up after the drain
            with trio.fail_after(5):
                while got[-1] != b"late":
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    finally:
        for socket in (reader_side, writer_side):
            trio.lowlevel.notify_closing(socket.getsockopt(zmq.FD))
            socket.close(linger=0)
        context.term()
