"""Says when orders near or pass their deadlines (``order.deadline_approaching`` and
``order.deadline_missed``), once each per order, deadline and phase, whatever the number of
processors: the alert's row and its event are written in one transaction, and a second
processor's insert of the same alert does nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from services.processor.deadlines import phase_at
from services.processor.metrics import DEADLINE_ALERTS, ORDERS_BY_DEADLINE
from services.processor.repository import PendingDeadline, ProcessorUnitOfWork
from shared.background import BackgroundTask
from shared.contracts import Envelope, OrderDeadline
from shared.logging import get_logger
from shared.topology import EVENTS

log = get_logger(__name__)

SOURCE = "processor"
#: Alerts said per transaction: a backlog (the first start) is worked through in rounds.
ROUND = 500


class DeadlineWatch(BackgroundTask):
    name = "deadline-watch"

    def __init__(
        self,
        new_uow: Callable[[], ProcessorUnitOfWork],
        *,
        lead: timedelta,
        interval: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._new_uow = new_uow
        self._lead = lead
        self._interval = interval
        self._clock = clock
        super().__init__()

    async def run(self) -> None:
        while True:
            try:
                while await self.say_due_alerts() == ROUND:
                    pass
            except Exception as error:  # the database away: the next round says them
                log.warning("deadlines.check_failed", error=str(error))
            await asyncio.sleep(self._interval)

    async def say_due_alerts(self) -> int:
        """One round: the alerts now due, said; returns how many."""
        now = self._clock()
        said = 0
        async with self._new_uow() as uow:
            for pending in await uow.deadlines.unsaid(now, self._lead, ROUND):
                phase = phase_at(now, pending.due_at, self._lead)
                if phase is None or not await uow.deadlines.record(pending, phase.value):
                    continue
                await uow.outbox.add(EVENTS.name, _alert(pending, phase.event))
                DEADLINE_ALERTS.labels(pending.deadline.value, phase.value).inc()
                log.warning(
                    f"order.deadline_{phase.value}",
                    order_id=pending.marketplace_order_id,
                    deadline=pending.deadline.value,
                    due_at=pending.due_at.isoformat(),
                    status=pending.status.value,
                )
                said += 1
        return said

    async def refresh_metrics(self, uow: ProcessorUnitOfWork) -> None:
        standing = await uow.deadlines.standing(self._clock(), self._lead)
        for (deadline, state), count in standing.items():
            ORDERS_BY_DEADLINE.labels(deadline, state).set(count)


def _alert(pending: PendingDeadline, type_: Any) -> Envelope[Any]:
    return Envelope[Any](
        type=type_,
        source=SOURCE,
        data=OrderDeadline(
            marketplace=pending.marketplace,
            marketplace_order_id=pending.marketplace_order_id,
            deadline=pending.deadline,
            due_at=pending.due_at,
            status=pending.status,
        ),
    )
