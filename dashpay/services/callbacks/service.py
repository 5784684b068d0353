"""What the ``callbacks.*`` commands do (``api/commands.py`` parses their
parameters): list, show, retry, test an endpoint, show the secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import trio

from dashpay.domain.accounting import new_event_id
from dashpay.domain.errors import DashpayError, NotFound
from dashpay.domain.model import (
    CallbackAttempt,
    CallbackRecord,
)
from dashpay.domain.status import OUTBOX_PENDING
from dashpay.domain.views import iso_time
from dashpay.repository.base import Repository
from dashpay.services.callbacks.sender import CallbackSender, display_origin, now_ms

# The event `callbacks test` sends: signed like any other, never stored in the outbox.
EVENT_PING = "ping"


# -- what the callbacks.* commands do (api/commands.py parses their parameters) ----------

log = logging.getLogger("dashpay.callbacks")


def attempt_view(attempt: CallbackAttempt) -> dict[str, Any]:
    return {
        "attempted_at": iso_time(attempt.attempted_at),
        "http_status": attempt.http_status,
        "error": attempt.error,
        "duration_ms": attempt.duration_ms,
    }


def callback_view(record: CallbackRecord, default_url: str | None) -> dict[str, Any]:
    event = record.event
    return {
        "event_id": event.event_id,
        "event": event.event,
        "receiver_id": event.receiver_id,
        "status": event.status,
        "attempts": event.attempts,
        "url": record.callback_url or default_url,
        "created_at": iso_time(event.created_at),
        "next_attempt_at": iso_time(event.next_attempt_at)
        if event.status == OUTBOX_PENDING
        else None,
        "first_attempt_at": iso_time(record.first_attempt_at),
        "delivered_at": iso_time(event.delivered_at),
        "last_error": event.last_error,
        "seq": record.seq,
    }


class CallbackService:
    """What the ``callbacks.*`` commands do (api/commands.py parses their parameters);
    each returns JSON-ready data."""

    def __init__(
        self,
        repo: Repository,
        sender: CallbackSender,
        wallet_id: str,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.repo = repo
        self.sender = sender
        self.wallet_id = wallet_id
        self.clock = clock

    @property
    def default_url(self) -> str | None:
        return self.sender.rules.default_url

    async def list(
        self, status: str | None, receiver_id: int | None, limit: int, before: int | None
    ) -> dict[str, Any]:
        """Events of the wallet, newest first; ``before`` is a seq from ``next_before``."""
        records = await trio.to_thread.run_sync(
            lambda: self.repo.list_callbacks(
                wallet_id=self.wallet_id,
                receiver_id=receiver_id,
                status=status,
                limit=limit,
                before_seq=before,
            )
        )
        more = len(records) == limit
        return {
            "events": [callback_view(r, self.default_url) for r in records],
            "next_before": records[-1].seq if more and records else None,
        }

    async def get(self, event_id: str) -> dict[str, Any]:
        """The event, its body and its attempt log."""
        found = await trio.to_thread.run_sync(self.repo.get_callback, event_id)
        if found is None or found[0].wallet_id != self.wallet_id:
            raise NotFound(f"no callback event {event_id}", event_id=event_id)
        record, attempts = found
        view = callback_view(record, self.default_url)
        try:
            view["payload"] = json.loads(record.event.payload)
        except ValueError:
            view["payload"] = record.event.payload
        view["attempt_log"] = [attempt_view(a) for a in attempts]
        return view

    async def retry(self, event_id: str | None, receiver_id: int | None) -> dict[str, Any]:
        """Queue one event (``event_id``), or every failed one (of ``receiver_id`` when
        given), for delivery now with the same event id; a delivered event is sent
        again, a pending one skips its back-off."""
        now = self.clock()
        if event_id is None:
            count = await trio.to_thread.run_sync(
                lambda: self.repo.retry_failed_callbacks(
                    self.wallet_id, now, receiver_id=receiver_id
                )
            )
            log.info("callbacks retried all_failed=true count=%d receiver=%s", count, receiver_id)
            self.sender.requeued(receiver_id)
            return {"retried": count, "event_ids": None}
        event = await trio.to_thread.run_sync(
            self.repo.retry_callback, event_id, self.wallet_id, now
        )
        log.info("callback retried event_id=%s receiver=%d", event_id, event.receiver_id)
        self.sender.requeued(event.receiver_id)
        return {"retried": 1, "event_ids": [event_id]}

    async def test(self, url: str) -> dict[str, Any]:
        """POST a signed ``ping`` event to ``url`` (not stored, not retried) and report
        the answer, so a merchant can check their endpoint and signature code."""
        event_id = new_event_id()
        created = self.clock()
        body = json.dumps(
            {
                "event": EVENT_PING,
                "event_id": event_id,
                "created_at": iso_time(created),
                "receiver": None,
                "payment": None,
            },
            separators=(",", ":"),
        ).encode("utf-8")
        delivery = await self.sender.post(url, EVENT_PING, event_id, body, excerpt=True)
        ok = delivery.http_status is not None and 200 <= delivery.http_status <= 299
        log.info(
            "callback test target=%s status=%s ok=%s", display_origin(url), delivery.http_status, ok
        )
        return {
            "url": url,
            "ok": ok,
            "http_status": delivery.http_status,
            "error": delivery.error,
            "duration_ms": delivery.duration_ms,
            "response_excerpt": delivery.excerpt,
            "event_id": event_id,
            "body": body.decode("utf-8"),
        }

    async def secret(self) -> dict[str, Any]:
        """The HMAC secret in use, so the merchant can copy it into their handler."""
        return {"secret": self.sender.secret.value, "source": self.sender.secret.source}

    async def status_view(self) -> dict[str, Any]:
        """For `dashpay status`: the sender's counters and the outbox backlog."""
        stats = self.sender.stats
        result: dict[str, Any] = {
            "running": self.sender.running,
            "in_flight": self.sender.in_flight,
            "attempts": stats.attempts,
            "delivered": stats.delivered,
            "retried": stats.retried,
            "failed": stats.failed,
            "last_error": stats.last_error,
        }
        try:
            backlog = await trio.to_thread.run_sync(self.repo.callback_backlog, self.wallet_id)
        except DashpayError as exc:
            result["error"] = exc.message
            return result
        oldest = backlog.oldest_pending_created_at
        result["pending"] = backlog.pending
        result["failed_total"] = backlog.failed
        result["oldest_pending_age_seconds"] = (
            None if oldest is None else max(0, round((self.clock() - oldest) / 1000, 3))
        )
        return result
