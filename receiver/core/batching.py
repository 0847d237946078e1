"""Group commit: what arrives while a write is under way is written together, next."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """`await submit(item)` returns once a write that holds `item` has finished (or raises
    that write's error). Items queued during a write form the next write, so a busy caller
    pays one write (one fsync, one transaction) per group instead of one per item."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]]) -> None:
        self.write = write
        self._waiting: list[tuple[T, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        await done

    async def drain(self) -> None:
        """Wait for the write under way, if any."""
        if self._writer is not None:
            await self._writer

    async def _write_all(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await self.write([item for item, _ in group])
            except Exception as exc:
                _settle(group, exc)
            else:
                _settle(group, None)


def _settle(group: list[tuple[T, asyncio.Future[None]]], error: Exception | None) -> None:
    for _, done in group:
        if done.done():
            continue  # its caller gave up waiting (cancelled); the write happened anyway
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
