"""systemd integration: sd_notify(3) messages and the watchdog's proof of life."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("dashpay.daemon")


def sd_notify(message: str) -> bool:
    """Send a sd_notify(3) datagram when run by systemd with Type=notify."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify failed socket=%s error=%s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False


class Watchdog:
    """Pings systemd's watchdog (``WATCHDOG=1``) at half its period, as
    sd_watchdog_enabled(3) recommends, when the unit sets ``WatchdogSec``."""

    def __init__(self) -> None:
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self._last = 0.0

    def tick(self) -> None:
        """Called by the engine loop once a second: proof that it is alive."""
        if self.interval is None:
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            sd_notify("WATCHDOG=1")
