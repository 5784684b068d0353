"""The link figures every chain watcher keeps for `dashpay status` (``ChainWatcher`` in
``net/chain.py``), declared once: the states and the counters."""

from __future__ import annotations

STATE_CONNECTING = "connecting"  # never connected yet
STATE_CONNECTED = "connected"  # subscribed; events flow
STATE_DISCONNECTED = "disconnected"  # was connected, lost the link, retrying


class LinkStatus:
    """``state`` and wall times (``connected_since``, ``disconnected_since``,
    ``last_event_at``), ``reconnects``, ``events_received``, ``events_rejected``."""

    def __init__(self) -> None:
        self.state = STATE_CONNECTING
        self.connected_since: float | None = None
        self.disconnected_since: float | None = None
        self.last_event_at: float | None = None
        self.reconnects = 0
        self.events_received = 0
        self.events_rejected = 0

    def link_up(self, wall: float) -> None:
        """The link is up at ``wall`` (epoch seconds): subscribed, events flow. Coming
        back from ``disconnected`` counts a reconnect; already up, nothing changes."""
        if self.state == STATE_CONNECTED:
            return
        if self.state == STATE_DISCONNECTED:
            self.reconnects += 1
        self.state = STATE_CONNECTED
        self.connected_since = wall
        self.disconnected_since = None

    def link_down(self, wall: float) -> None:
        """The link was lost at ``wall``; the watcher retries."""
        self.state = STATE_DISCONNECTED
        self.connected_since = None
        self.disconnected_since = wall
