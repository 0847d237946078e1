"""`ingest`: the one entry point for webhooks, polls and replays.

Callers hand over an event and wait for the commit that holds it. A single writer task takes
everything queued since its last commit and stores it in ONE transaction, so concurrent requests
share commits (and fsyncs) while each answer still goes out only after its own event is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import structlog

from receiver.core.errors import StoreUnavailable
from receiver.core.events import Event
from receiver.router import Router
from receiver.store import NewEvent, Store, Stored, is_outage

log = structlog.get_logger("hookyard.pipeline")

_Pending = tuple[NewEvent, "asyncio.Future[Stored]"]


class Pipeline:
    """Routes events, batches them into the store, and tells listeners about new deliveries."""

    def __init__(self, store: Store, router: Router, *, max_batch: int = 512) -> None:
        self.store = store
        self.router = router
        self.max_batch = max_batch
        # Told after every commit: the items and what storing them did.
        self.listeners: list[Callable[[Sequence[NewEvent], Sequence[Stored]], None]] = []
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hookyard-batch-writer")

    async def stop(self) -> None:
        """Commit everything already queued, then stop the writer."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        await self._task
        self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def ingest(self, event: Event, raw_body: bytes, headers: Mapping[str, str]) -> Stored:
        """Store `event` (deduplicated) with a pending delivery per routed sink; return after
        the commit. Raises StoreUnavailable when it could not be stored."""
        if not self.running:
            raise StoreUnavailable("hookyard is not accepting events right now; retry later")
        item = NewEvent(event, raw_body, headers, self.router.sinks_for(event.source, event.type))
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        # No shield needed: if the caller is cancelled (client hung up) the item stays queued
        # and is committed all the same; only the answer is lost.
        return await future

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[_Pending] = []
            first = await self._queue.get()
            stopping = first is None
            if first is not None:
                batch.append(first)
            while len(batch) < self.max_batch and not self._queue.empty():
                pending = self._queue.get_nowait()
                if pending is None:
                    stopping = True
                else:
                    batch.append(pending)
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            results = await self.store.write_events([item for item, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and not is_outage(exc):
                # One bad item must not fail its neighbours: isolate it by committing one by one.
                for pending in batch:
                    await self._commit([pending])
                return
            log.error(
                "store.write_failed",
                error=repr(exc)[:500],
                events=len(batch),
                first_event_id=batch[0][0].event.id,
            )
            for _, future in batch:
                _settle_error(
                    future, StoreUnavailable("the event store could not commit; retry later")
                )
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        items = [item for item, _ in batch]
        for listener in self.listeners:
            listener(items, results)


def _settle_error(future: asyncio.Future[Stored], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
