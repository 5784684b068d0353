"""The HTTP API's server: hypercorn's trio worker, in the daemon's own nursery.

The surface faces the network, so the HTTP/1.1 and HTTP/2 parsing is a well-kept
server's (hypercorn over h11/h2), not ours. This shell only turns ``[http]`` into
hypercorn's settings; it runs any ASGI app (the daemon gives it ``api/http/app.py``'s).

What bounds a slow or hostile client (hypercorn's settings, then the app's):

- ``idle_timeout`` -> ``keep_alive_timeout``: a connection with no request under way is
  closed after it, including one that is still sending its request head (slowloris);
  idle connections cost a task and a socket each, no CPU;
- ``request_timeout`` is the app's, not hypercorn's: the app gives a request's whole
  body that long (408) and its handling that long (503). hypercorn's ``read_timeout``
  is off: its trio worker applies it to every read of the connection, also while a
  response is being sent, so it cut every event stream (whose client sends nothing)
  after ``request_timeout``. A stream lives as long as its client keeps it open; its
  heartbeat comments find a peer that vanished (the write fails) and keep proxies from
  closing it;
- request heads over 16 KiB are refused by h11 (``h11_max_incomplete_size``); bodies
  over ``max_body`` by the app (413, before reading them when Content-Length says so);
- HTTP/2 (with TLS) allows 32 concurrent streams per connection, heads of 16 KiB.
"""

from __future__ import annotations

import logging

import trio

from dashpay.config.http import HttpConfig

log = logging.getLogger("dashpay.http")

MAX_HEAD_BYTES = 16 * 1024
H2_MAX_STREAMS = 32
# hypercorn's own shutdown trigger is unused: the daemon's nursery cancels the server.
GRACEFUL_SECONDS = 2.0
LISTEN_BACKLOG = 1024


def hypercorn_config(config: HttpConfig):  # -> hypercorn.config.Config
    from hypercorn.config import Config

    hc = Config()
    hc.bind = list(config.listen)
    if config.tls_cert is not None:
        hc.certfile = str(config.tls_cert)
        hc.keyfile = str(config.tls_key)
    hc.keep_alive_timeout = config.idle_timeout
    hc.read_timeout = None  # see the module docstring: request_timeout is the app's
    hc.h11_max_incomplete_size = MAX_HEAD_BYTES
    hc.h2_max_concurrent_streams = H2_MAX_STREAMS
    hc.h2_max_header_list_size = MAX_HEAD_BYTES
    hc.graceful_timeout = GRACEFUL_SECONDS
    hc.backlog = LISTEN_BACKLOG
    hc.include_server_header = False
    hc.accesslog = None  # the app logs each request with the client behind proxies
    # hypercorn's errors and warnings; its one info line ("Running on ... CTRL + C to
    # quit") is the daemon's own "http API listening" line instead.
    errors = logging.getLogger("dashpay.http.server")
    errors.setLevel(logging.WARNING)
    hc.errorlog = errors
    return hc


async def serve_http(app, config: HttpConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` on ``config.listen`` until cancelled; ``task_status.started`` gets
    the URLs bound (a port 0 is resolved to the port taken)."""
    from hypercorn.trio import serve

    async def run(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await serve(app, hypercorn_config(config), task_status=task_status)

    async with trio.open_nursery() as nursery:
        urls = await nursery.start(run)
        for url in urls:
            log.info("http API listening url=%s", url)
        task_status.started(urls)
