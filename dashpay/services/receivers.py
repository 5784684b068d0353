"""Receivers: create, show, list, cancel. All business rules for receivers live here;
the control server only decodes and encodes, the repository only stores."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import trio

from dashpay.errors import Conflict, NotFound, PriceUnavailable
from dashpay.params import (
    DASH,
    parse_create_receiver,
    parse_list_receivers,
    parse_receiver_id,
)
from dashpay.repository.base import STATUSES, NewReceiver, Receiver, Repository
from dashpay.services.views import receiver_view
from dashpay.wallet import Wallet

if TYPE_CHECKING:
    from dashpay.services.valuation import PriceService

log = logging.getLogger("dashpay.receivers")


# How often receiver creation looks at the unpaid gap when only a warning depends on it.
GAP_CHECK_INTERVAL = 60.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class ReceiverDefaults:
    expires_after: float  # seconds; 0 = never
    callback_url: str | None
    gap_limit_warning: int = 20  # Electrum's default gap limit
    gap_limit_max: int | None = None  # refuse new receivers past this many unpaid


class ReceiverService:
    """Receiver use cases. ``on_created`` / ``on_cancelled`` tell the payment engine
    to start or stop watching (it owns the pending table)."""

    def __init__(
        self,
        repo: Repository,
        wallet: Wallet,
        defaults: ReceiverDefaults,
        *,
        clock: Callable[[], int] = now_ms,
        prices: PriceService | None = None,
        on_created: Callable[[Receiver], Awaitable[None]] | None = None,
        on_cancelled: Callable[[Receiver], Awaitable[None]] | None = None,
    ) -> None:
        self.repo = repo
        self.wallet = wallet
        self.defaults = defaults
        self.clock = clock
        self.prices = prices
        self._next_gap_check = 0.0
        self.on_created = on_created
        self.on_cancelled = on_cancelled

    async def create(self, params: dict[str, Any]) -> dict[str, Any]:
        request = parse_create_receiver(params)
        fiat = None
        if request.currency == DASH:
            assert request.amount_duffs is not None
            amount_duffs = request.amount_duffs
        else:
            if self.prices is None:
                raise PriceUnavailable(
                    f"no price source is configured for {request.currency}; "
                    "give the amount in DASH",
                    currency=request.currency,
                )
            fiat = await self.prices.convert(request.amount, request.currency)
            amount_duffs = fiat.amount_duffs
        created_at = self.clock()
        expires_after = (
            self.defaults.expires_after if request.expires_after is None else request.expires_after
        )
        new = NewReceiver(
            wallet_id=self.wallet.wallet_id,
            chain=self.wallet.chain,
            amount_duffs=amount_duffs,
            created_at=created_at,
            expires_at=None if expires_after == 0 else created_at + int(expires_after * 1000),
            callback_url=request.callback_url or self.defaults.callback_url,
            description=request.description,
            username=request.username,
            idempotency_key=request.idempotency_key,
            fiat_amount=None if fiat is None else fiat.fiat_amount,
            fiat_currency=None if fiat is None else fiat.fiat_currency,
            rate=None if fiat is None else fiat.rate,
            rate_provider=None if fiat is None else fiat.rate_provider,
            rate_fetched_at=None if fiat is None else fiat.rate_fetched_at,
        )

        limit = self.defaults.gap_limit_max
        # The gap query scans an index; with no hard limit it only feeds a warning,
        # which needs no more than one look a minute.
        check_gap = limit is not None or time.monotonic() >= self._next_gap_check

        def work() -> tuple[Receiver, bool, int | None]:
            gap = (
                self.repo.unpaid_gap(self.wallet.wallet_id, self.wallet.chain)
                if check_gap
                else None
            )
            if limit is not None and gap is not None and gap >= limit:
                raise Conflict(
                    f"{gap} receivers in a row are unpaid ([wallet] gap_limit_max = {limit}); "
                    "a wallet stops looking past its gap limit, so payments to newer "
                    "addresses would not show in it. Raise the gap limit in the wallet "
                    "(Electrum: wallet.change_gap_limit(N) in its console) and in "
                    "[wallet] gap_limit_max, or wait until some receivers are paid",
                    gap=gap,
                )
            receiver, created = self.repo.create_receiver(new, self.wallet.address)
            if gap is None:
                return receiver, created, None
            return receiver, created, gap + 1 if created else gap

        receiver, created, gap = await trio.to_thread.run_sync(work)
        if gap is not None:
            self._next_gap_check = time.monotonic() + GAP_CHECK_INTERVAL
        if created and gap is not None and gap > self.defaults.gap_limit_warning:
            log.warning(
                "gap limit warning unpaid_in_a_row=%d gap_limit_warning=%d: the merchant's "
                "wallet may not show payments to addresses past its gap limit",
                gap,
                self.defaults.gap_limit_warning,
            )
        if not created:
            if receiver.wallet_id != self.wallet.wallet_id:
                raise Conflict(
                    "idempotency_key was already used for a receiver of another wallet; "
                    "use a fresh key"
                )
            if fiat is not None:  # the rate moves: the request is what must match
                same = receiver.fiat_currency == fiat.fiat_currency and (
                    receiver.fiat_amount is not None
                    and Decimal(receiver.fiat_amount) == request.amount
                )
            else:
                same = receiver.fiat_currency is None and receiver.amount_duffs == amount_duffs
            if not same:
                raise Conflict(
                    f"idempotency_key {request.idempotency_key!r} was already used for "
                    f"receiver {receiver.receiver_id} with a different amount; "
                    "use a fresh key for a new request",
                    receiver_id=receiver.receiver_id,
                )
        else:
            log.info(
                "receiver created id=%d index=%d address=%s amount_duffs=%d",
                receiver.receiver_id,
                receiver.hd_index,
                receiver.address,
                receiver.amount_duffs,
            )
            if self.on_created is not None:
                await self.on_created(receiver)
        view = receiver_view(receiver)
        view["created"] = created
        return view

    async def get(self, params: dict[str, Any]) -> dict[str, Any]:
        receiver_id = parse_receiver_id(params)

        def load() -> tuple[Receiver | None, list]:
            receiver = self.repo.get_receiver(receiver_id)
            payments = self.repo.list_payments(receiver_id) if receiver else []
            return receiver, payments

        receiver, payments = await trio.to_thread.run_sync(load)
        if receiver is None:
            raise NotFound(f"no receiver with id {receiver_id}", receiver_id=receiver_id)
        return receiver_view(receiver, payments)

    async def list(self, params: dict[str, Any]) -> dict[str, Any]:
        request = parse_list_receivers(params, STATUSES)
        receivers = await trio.to_thread.run_sync(
            lambda: self.repo.list_receivers(
                wallet_id=self.wallet.wallet_id,
                status=request.status,
                limit=request.limit,
                before_id=request.before_id,
            )
        )
        more = len(receivers) == request.limit
        return {
            "receivers": [receiver_view(r) for r in receivers],
            "next_before_id": receivers[-1].receiver_id if more and receivers else None,
        }

    async def cancel(self, params: dict[str, Any]) -> dict[str, Any]:
        receiver_id = parse_receiver_id(params)
        receiver = await trio.to_thread.run_sync(
            self.repo.cancel_receiver, receiver_id, self.clock()
        )
        log.info("receiver cancelled id=%d", receiver_id)
        if self.on_cancelled is not None:
            await self.on_cancelled(receiver)
        return receiver_view(receiver)
