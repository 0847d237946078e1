"""Ingest: the one way an event enters the log, for webhooks and polls alike.

Callers hand over an event and wait for the commit that holds it. Events that arrive while a
commit is under way are stored together in the next one (receiver.core.batching, policy
ISOLATE: one bad event fails alone), so concurrent requests share transactions and fsyncs while
each answer still goes out only after its own event is durable. Replays do not come through
here: they add delivery rows to events already stored (receiver.replay).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import structlog

from receiver.core.batching import GroupCommit, OnError
from receiver.core.errors import StoreUnavailable
from receiver.core.events import Event
from receiver.router import Router
from receiver.store import NewEvent, Store, Stored

log = structlog.get_logger("hookyard.ingest")

Listener = Callable[[Sequence[NewEvent], Sequence[Stored]], None]


class Ingest:
    """Routes events and commits them, in groups, with their pending deliveries."""

    def __init__(self, store: Store, router: Router, *, max_batch: int = 512) -> None:
        self.store = store
        self.router = router
        self._writer: GroupCommit[NewEvent, Stored] = GroupCommit(
            self.store.write_events,
            on_error=OnError.ISOLATE,
            max_batch=max_batch,
            name="ingest",
        )
        self._open = False
        # When this process last committed events (time.monotonic()): whether its own ingest
        # is busy (receiver.app's change follower paces itself by it).
        self.committed_at = float("-inf")
        self._writer.listeners.append(self._committed)

    def _committed(self, *_: object) -> None:
        self.committed_at = time.monotonic()

    @property
    def listeners(self) -> list[Listener]:
        """Told after every commit: the items and what storing them did."""
        return self._writer.listeners

    async def start(self) -> None:
        self._open = True

    async def stop(self) -> None:
        """Commit everything already queued, then refuse new events."""
        self._open = False
        await self._writer.drain()

    @property
    def running(self) -> bool:
        return self._open

    async def submit(self, event: Event, raw_body: bytes, headers: Mapping[str, str]) -> Stored:
        """Store `event` (deduplicated) with a pending delivery per routed sink; return after
        the commit. Raises StoreUnavailable when it could not be stored."""
        if not self._open:
            raise StoreUnavailable("hookyard is not accepting events right now; retry later")
        item = NewEvent(event, raw_body, headers, self.router.sinks_for(event.source, event.type))
        try:
            stored = await self._writer.submit(item)
        except StoreUnavailable:
            log.error("store.write_failed", event_id=event.id, source=event.source)
            raise
        except Exception as exc:
            log.error("store.write_failed", event_id=event.id, source=event.source,
                      error=repr(exc)[:500])
            raise StoreUnavailable("the event store could not commit; retry later") from None
        return stored
