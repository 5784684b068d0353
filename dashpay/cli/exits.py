"""The exit codes that follow from a command's answer, with --json or without (the
renderers in ``render.py`` show it; this module alone is imported for --json)."""

from __future__ import annotations

from dashpay.domain.errors import EXIT_NOT_READY, EXIT_REJECTED, EXIT_UPSTREAM


def exit_code(method: str, result: dict) -> int | None:
    """The exit code ``result`` calls for, None for 0."""
    if method == "status":
        return status_exit(result)
    if method == "callbacks.test":
        return callbacks_test_exit(result)
    if method == "price.get":
        from dashpay.cli import prices

        return prices.exit_code(result)
    return None


def status_exit(result: dict) -> int | None:
    """`status` exits 1 when the daemon answers but is not ready, --json or not."""
    return None if result.get("ready") else EXIT_NOT_READY


def callbacks_test_exit(result: dict) -> int | None:
    """0 on a 2xx, 4 when the [callbacks] rules refuse the URL, 5 otherwise."""
    if result["ok"]:
        return None
    refused = (result.get("error") or "").startswith("refused:")
    return EXIT_REJECTED if refused else EXIT_UPSTREAM
