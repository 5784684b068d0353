"""One Blockbook websocket connection's state, shared by its reader, writer and
heartbeat tasks (``net/blockbook.py`` runs them): its address subscription, its
pending requests by id and the frames waiting for the writer (every frame waiting
goes out in one write)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import trio

from dashpay.net.insight_socket import SocketEndpoint
from dashpay.wire import blockbook as bb
from dashpay.wire import websocket as wsframe


class BlockbookUnavailable(bb.BlockbookError):
    """No answer: the connection is down or the answer did not come in time."""


def parse_blockbook_url(url: str) -> SocketEndpoint:
    """Where ``<url>/websocket`` (the caller adds the path) is; ValueError says what to fix."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError(f"Blockbook URL {url!r} is not an http(s) or ws(s) URL with a host")
    tls = scheme in ("https", "wss")
    port = parts.port or (443 if tls else 80)
    return SocketEndpoint(parts.hostname, port, parts.path or "/websocket", tls)


@dataclass(slots=True)
class PendingAnswer:
    done: trio.Event = field(default_factory=trio.Event)
    data: Any = None
    error: Exception | None = None


class BlockbookLink:
    """One websocket: its subscription, its pending requests, its writer queue."""

    def __init__(self, index: int, scope: trio.CancelScope) -> None:
        self.index = index
        self.scope = scope
        self.stream: trio.abc.Stream | None = None
        self.reason: str | None = None
        self.refused = False
        self.connected_at: float | None = None  # trio clock, once subscribed
        self.last_heard = trio.current_time()
        self.requests = bb.Requests()
        self.pending: dict[str, PendingAnswer] = {}
        self.outbox: list[bytes] = []  # frames waiting for the writer
        self.wake_writer = trio.Event()
        self.subscription_ids: set[str] = set()  # address notifications come under these
        self.block_id: str | None = None
        self.subscribed: tuple[str, ...] = ()

    def end(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()

    def send(self, method: str, params: dict[str, Any]) -> tuple[str, PendingAnswer]:
        request_id, text = self.requests.build(method, params)
        pending = PendingAnswer()
        self.pending[request_id] = pending
        self.queue(wsframe.encode_text(text))
        return request_id, pending

    def queue(self, frame: bytes) -> None:
        self.outbox.append(frame)
        self.wake_writer.set()

    def fail_all(self, reason: str) -> None:
        for pending in self.pending.values():
            pending.error = BlockbookUnavailable(f"Blockbook connection lost: {reason}")
            pending.done.set()
        self.pending.clear()
