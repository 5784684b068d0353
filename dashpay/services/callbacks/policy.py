"""What an attempt's answer means: delivered, retried (when, honouring Retry-After)
or failed; the texts an attempt records. Pure functions of the answer and the rules."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dashpay.config.durations import format_duration
from dashpay.config.model import CallbacksConfig
from dashpay.domain.model import (
    AttemptOutcome,
)
from dashpay.domain.status import OUTBOX_DELIVERED, OUTBOX_FAILED, OUTBOX_PENDING

# How much of an error response is kept in the attempt log (`callbacks show`).
RESPONSE_EXCERPT_CHARS = 200
# Transient answers (RFC 9110): request timeout, too many requests, and server errors.
RETRYABLE_STATUSES = frozenset({408, 429})


# -- one attempt --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one POST learned."""

    http_status: int | None
    error: str | None  # None for a 2xx
    duration_ms: int
    refused: bool = False  # the target rules forbid it (never retried)
    retry_after: float | None = None  # seconds the server asked us to wait
    excerpt: str = ""  # the start of the response body, printable


def is_retryable(delivery: Delivery) -> bool:
    if delivery.refused:
        return False
    status = delivery.http_status
    return status is None or status in RETRYABLE_STATUSES or 500 <= status <= 599


def plan_outcome(
    rules: CallbacksConfig,
    delivery: Delivery,
    *,
    attempted_at: int,
    first_attempt_at: int | None,
    attempts_before: int,
    now: int,
) -> AttemptOutcome:
    """The event's fate after an attempt (times in epoch ms): delivered on a 2xx;
    failed on a refusal, a redirect or another 4xx, or when the give-up horizon has
    passed; else pending until the next attempt (see the module docstring)."""

    def outcome(status: str, error: str | None, next_at: int | None = None) -> AttemptOutcome:
        return AttemptOutcome(
            attempted_at=attempted_at,
            duration_ms=delivery.duration_ms,
            http_status=delivery.http_status,
            error=error,
            status=status,
            next_attempt_at=next_at,
        )

    status = delivery.http_status
    if status is not None and 200 <= status <= 299:
        return outcome(OUTBOX_DELIVERED, None)
    if not is_retryable(delivery):
        return outcome(OUTBOX_FAILED, delivery.error)
    start = attempted_at if first_attempt_at is None else first_attempt_at
    deadline = start + int(rules.give_up_after * 1000)
    if attempted_at >= deadline:  # this was the attempt made at the horizon: the last
        attempts = attempts_before + 1
        span = format_duration(round((attempted_at - start) / 1000))
        return outcome(
            OUTBOX_FAILED, f"{delivery.error} (gave up after {attempts} attempts in {span})"
        )
    elapsed = (now - start) / 1000
    delay = min(rules.backoff_max, max(rules.backoff_initial, elapsed + rules.backoff_initial))
    if delivery.retry_after is not None:
        delay = max(delay, delivery.retry_after)
    next_at = min(now + math.ceil(delay * 1000), deadline)
    return outcome(OUTBOX_PENDING, delivery.error, next_at)


def _printable(data: bytes, limit: int = RESPONSE_EXCERPT_CHARS) -> str:
    text = data.decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else " " for ch in text[: limit * 2])
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _status_error(status: int, excerpt: str) -> str | None:
    if 200 <= status <= 299:
        return None
    text = f"HTTP {status}"
    if 300 <= status <= 399:
        text += " (redirects are not followed: use the final URL as the callback URL)"
    return f"{text}: {excerpt}" if excerpt else text
