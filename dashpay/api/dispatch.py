"""The control socket's dispatcher, built from the command table.

One place turns a JSON-RPC method and its params into a handler call: unknown methods,
sandbox-only commands outside the sandbox, commands whose service has not started yet,
the allow-list check and the parsing of every parameter (``Command.parse_params``).
Errors are raised as ``DashpayError`` subclasses; the control server translates them
into JSON-RPC errors with ``data.kind`` (``net/control_server.py``).
"""

from __future__ import annotations

from typing import Any

from dashpay.api.commands import COMMANDS, Services
from dashpay.domain.errors import MethodNotFound, Unavailable
from dashpay.domain.status import DAEMON_STARTING


class Dispatcher:
    def __init__(self, services: Services, *, sandbox: bool, state: Any = None) -> None:
        self.services = services
        self.sandbox = sandbox
        # A callable giving the daemon's state for the "not available yet" message.
        self.state = state or (lambda: DAEMON_STARTING)

    async def __call__(self, method: str, params: dict[str, Any]) -> Any:
        command = COMMANDS.get(method)
        if command is None:
            raise MethodNotFound(f"unknown method {method!r}")
        if command.sandbox_only and not self.sandbox:
            raise MethodNotFound(f"{method} exists only in sandbox mode (dashpay serve --sandbox)")
        if command.needs is not None and getattr(self.services, command.needs) is None:
            raise Unavailable(f"{method} is not available yet: the daemon is {self.state()}")
        return await command.handler(self.services, **command.parse_params(params))
