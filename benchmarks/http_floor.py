"""The HTTP server alone, for the http scenario's floor: `net/http_server.py` (hypercorn's
trio worker, with the daemon's settings) serving an ASGI app that answers every request
with a fixed JSON body the size of a receiver's, at once, without reading a database.

`python -m benchmarks.http_floor` prints its URL on the first line of stdout and serves
until stdin closes. Its CPU per request is what any request costs the process that
parses HTTP, before our app or the command does anything.
"""

from __future__ import annotations

import dataclasses
import sys

import trio

from dashpay.config.http import HttpConfig
from dashpay.net.http_server import serve_http

BODY = b'{"receiver_id":1,"status":"pending","address":"' + b"y" * 34 + b'"' + b" " * 600 + b"}"


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


async def main() -> None:
    config = dataclasses.replace(HttpConfig(), listen=("127.0.0.1:0",))
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(serve_http, app, config)
        print(urls[0], flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the benchmark closes it
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
