"""Limits that more than one layer enforces, each defined once with its reason.

A limit lives here when two modules that may not import each other (the control API's
parameter checks and the repository, the config loader and the callback sender) must
agree on it; a limit only one module enforces stays next to its code. Stdlib-free and
import-free so every layer, the CLI included, can import it for nothing.
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
