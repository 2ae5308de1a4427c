"""One coroutine kept running in the background of a service, from ``start`` until ``stop``:
the outbox relay, the retention pruner and the deadline watch are each one."""

from __future__ import annotations

import asyncio
import contextlib


class BackgroundTask:
    """Subclasses say what runs (``run``, which loops until cancelled); this says how it
    starts once and stops cleanly."""

    name = "background"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
