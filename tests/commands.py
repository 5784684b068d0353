"""Calling a service through the command table, as the control socket does."""

from __future__ import annotations

from typing import Any

from dashpay.api.commands import Services
from dashpay.api.dispatch import Dispatcher


async def rpc(method: str, params: Any = None, **services: Any) -> Any:
    """Dispatch ``method`` with ``params`` to the given services (``receivers=svc``):
    parameters are checked and parsed by the command table, then the service runs."""

    async def no_status() -> dict[str, Any]:
        raise AssertionError("status is not served here")

    dispatch = Dispatcher(Services(status=no_status, **services), sandbox=True)
    return await dispatch(method, {} if params is None else params)
