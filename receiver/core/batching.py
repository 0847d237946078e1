"""Group commit: what arrives while a write is under way is written together, next.

The one implementation behind every batched write of hookyard: the ingest writer (events and
their deliveries), delivery outcomes, watched-job updates and the jsonl sink's fsyncs. Each
user picks what a failed write means (`OnError`) instead of writing its own loop.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar, cast

import structlog

from receiver.core.errors import StoreUnavailable
from receiver.core.loops import running_loop

T = TypeVar("T")
R = TypeVar("R")

log = structlog.get_logger("hookyard.batching")


class OnError(enum.Enum):
    """What a failed write means for the items in it."""

    RAISE = "raise"  # every waiter of that write gets the error
    # The group is written again one item at a time, so a bad item fails alone and its
    # neighbours are stored; an outage (StoreUnavailable) is not split: it fails everyone.
    ISOLATE = "isolate"
    # Written again, with backoff, until it succeeds: nothing is dropped (fire-and-forget items
    # such as delivery outcomes, whose rows stay claimed meanwhile).
    RETRY = "retry"


class Closed(StoreUnavailable):
    """The group commit was closed: nothing more is written."""


class GroupCommit(Generic[T, R]):
    """`await submit(item)` returns the write's result for `item` once a write that holds it
    has finished (or raises that write's error). Items queued during a write form the next
    write, so a busy caller pays one write (one transaction, one fsync) per group.

    `write(items)` returns one result per item, in order, or None (every result is None).
    `listeners` are told (items, results) after every successful write.
    """

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[Sequence[R] | None]],
        *,
        on_error: OnError = OnError.RAISE,
        max_batch: int | None = None,
        name: str = "group-commit",
        retry_max_s: float = 30.0,
    ) -> None:
        self.write = write
        self.on_error = on_error
        self.max_batch = max_batch
        self.name = name
        self.retry_max_s = retry_max_s
        self.listeners: list[Callable[[Sequence[T], Sequence[R]], None]] = []
        self._waiting: list[tuple[T, asyncio.Future[R] | None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        return not self._closed

    async def submit(self, item: T) -> R:
        """Queue `item` and wait for the write that holds it. If the caller is cancelled (a
        client hung up) the item stays queued and is written all the same."""
        done: asyncio.Future[R] = running_loop().create_future()
        self._enqueue(item, done)
        return await done

    def put(self, item: T) -> None:
        """Queue `item` without waiting for it (fire and forget; use with OnError.RETRY)."""
        self._enqueue(item, None)

    def _enqueue(self, item: T, done: asyncio.Future[R] | None) -> None:
        if self._closed:
            raise Closed(f"{self.name} is closed; retry later")
        self._waiting.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name=self.name)

    async def drain(self) -> None:
        """Wait until everything queued so far is written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def close(self) -> None:
        """Write what is queued, then refuse new items."""
        await self.drain()
        self._closed = True

    async def _write_all(self) -> None:
        while self._waiting:
            cut = self.max_batch or len(self._waiting)
            group, self._waiting = self._waiting[:cut], self._waiting[cut:]
            await self._write_group(group)

    async def _write_group(self, group: list[tuple[T, asyncio.Future[R] | None]]) -> None:
        items = [item for item, _ in group]
        delay = 0.5
        while True:
            try:
                results = await self.write(items)
            except Exception as exc:
                if self.on_error is OnError.RETRY:
                    log.error(f"{self.name}.write_failed", items=len(items),
                              error=repr(exc)[:300], retry_in_s=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                if (self.on_error is OnError.ISOLATE and len(group) > 1
                        and not isinstance(exc, StoreUnavailable)):
                    for single in group:
                        await self._write_group([single])
                    return
                _settle(group, None, exc)
                return
            break
        settled = list(results) if results is not None else cast(list[R], [None] * len(items))
        _settle(group, settled, None)
        for listener in self.listeners:
            listener(items, settled)


def _settle(
    group: list[tuple[T, asyncio.Future[R] | None]],
    results: list[R] | None,
    error: Exception | None,
) -> None:
    for i, (_, done) in enumerate(group):
        if done is None or done.done():
            continue  # fire and forget, or its caller gave up waiting (the write happened)
        if error is not None:
            done.set_exception(error)
        else:
            assert results is not None
            done.set_result(results[i])
