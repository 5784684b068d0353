"""Limits that more than one layer enforces, each defined once with its reason.

A limit lives here when two modules that may not import each other (the control API's
parameter checks and the repository, the config loader and the callback sender) must
agree on it, or when it is a promise to operators that the README states (the control
socket's sharing); a limit only one module enforces stays next to its code.
Stdlib-free and import-free so every layer, the CLI included, can import it for nothing.
"""

from __future__ import annotations

# The de-facto URL limit of browsers and proxies: callback URLs in the config, in
# control requests and in the callback sender.
MAX_URL_CHARS = 2048

# The largest page of a list call (receiver.list, callbacks.list, the outbox reads): a
# page larger than this belongs in an export, not a control call.
MAX_LIST_LIMIT = 1000

# callback_outbox.event_id is VARCHAR(64) in both backends; the engine makes "evt_" +
# 32 hex characters.
MAX_EVENT_ID_CHARS = 64

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL: the
# control socket's path, checked by the config loader and by the control server.
MAX_UNIX_SOCKET_PATH_BYTES = 107

# An HTTP/1.1 head (request or status line and headers) we buffer: h11's default and
# node.js's (16 KiB since v13), tomcat 8 KiB.
# Our callback client's response heads, the websocket upgrade answer from Insight and
# the sandbox server's request heads are all ~100-500 bytes.
MAX_HTTP_HEAD_BYTES = 16 * 1024

# Parsed URLs remembered by a cache (the HTTP client's origin/target split, the
# callback sender's validation) before it starts afresh: far more than the distinct
# callback URLs of one deployment, small enough to bound memory (~1 MB).
MAX_REMEMBERED_URLS = 4096

# Currencies one price.get may ask for: the daemon's answer (services/prices) and the
# CLI's check before it asks (cli/prices). Each may cost a request per provider.
MAX_REQUEST_CURRENCIES = 32

# -- the control socket's connections (net/control_server.py, net/control_admission.py;
# README "Control socket" states them for operators) --

# Open control connections the daemon serves at once, bounding its memory (each may
# buffer a 64 KiB request line) and its tasks. A CLI call holds one for milliseconds; an
# application holding a pool keeps a few.
MAX_CONTROL_CONNECTIONS = 256

# File descriptors the daemon needs beside its control and HTTP connections: the
# database pool, Insight's socket and REST pool, callback posts, listeners, logs. At
# start the daemon raises its open-file limit to the hard limit and warns when that is
# below MAX_CONTROL_CONNECTIONS + [http] max_connections + this (daemon/openfiles.py).
OPEN_FILES_RESERVE = 256

# The share of MAX_CONTROL_CONNECTIONS one peer uid (SO_PEERCRED) may hold. Half, fixed,
# rather than limit/number-of-uids: a fixed share is a guarantee that holds even when
# every connection of the heavy uid is busy answering a request (those are never
# evicted), so any other uid always finds the other half; a share that shrinks as uids
# appear could not be enforced against busy connections anyway. One uid running 128
# concurrent requests is far past any real client (the receiver writer batches 32).
CONTROL_UID_SHARE_PERCENT = 50

# From this occupancy on the daemon is "under pressure": idle connections get
# CONTROL_PRESSURE_IDLE_TIMEOUT instead of the usual keep-alive and partial-line
# timeouts. Equal to the uid share, so one uid filling its share is pressure by itself.
CONTROL_PRESSURE_PERCENT = 50

# Pressure ends only when occupancy falls below this: hysteresis, so that the idle
# connections that made the pressure are drained, not just the one that tipped it, and
# a table hovering at the threshold does not flip on every connect and close.
CONTROL_PRESSURE_END_PERCENT = 25

# The idle timeout under pressure: long enough for a client to send the request it
# connected for (the CLI writes it at once) and to reuse a connection between calls in
# a loop, short enough that idle connections cannot keep the table full.
CONTROL_PRESSURE_IDLE_TIMEOUT = 2.0

# The wallet lease (MySQL/MariaDB, docs/operations.md): a standby takes over about one
# lease after the owner stopped renewing. Below a second a busy database's pauses would
# depose a healthy owner; past five minutes nobody watches the wallet for that long.
MIN_LEASE_SECONDS = 1.0
MAX_LEASE_SECONDS = 300.0
