"""Handling concurrent deliveries together: one transaction for many messages.

Each delivery hands its item in and waits; a single worker takes what has gathered (up to
``max_size``, waiting at most ``max_wait`` after the first) and handles it at once. Every
delivery is settled only after its batch committed. When a batch fails, its items are
handled again one by one, so one bad item cannot fail the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    def __init__(
        self,
        handle: Callable[[list[T]], Awaitable[None]],
        *,
        max_size: int = 64,
        max_wait: float = 0.005,
    ) -> None:
        self._handle = handle
        self._max_size = max_size
        self._max_wait = max_wait
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[None]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._worker is None:
            # A context of its own: not the log context of whichever delivery came first.
            self._worker = asyncio.create_task(
                self._run(), name="micro-batcher", context=contextvars.Context()
            )

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def submit(self, item: T) -> None:
        """Returns once ``item``'s batch is committed; raises what failed it."""
        self.start()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, done))
        await done

    async def _gather(self) -> list[tuple[T, asyncio.Future[None]]]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self._max_wait
        while len(batch) < self._max_size:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            try:
                await self._handle([item for item, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                for item, done in batch:  # isolate the failing item(s)
                    try:
                        await self._handle([item])
                    except Exception as single:
                        _settle(done, single)
                    else:
                        _settle(done, None)
            else:
                for _, done in batch:
                    _settle(done, None)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():  # the delivery was cancelled meanwhile (shutdown)
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
