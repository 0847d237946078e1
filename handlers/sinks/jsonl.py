"""JSON Lines file sink: one line per event, flushed and fsynced before it counts as delivered.

For local use, the example config and debugging. Lines that arrive while a write is under way
are written together with one fsync (group commit), so a busy sink costs one fsync per group,
not per event. A replayed event is appended again (the file is a log of deliveries, not a set
of events): dedupe on the line's `id` when reading.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handlers.sinks.base import SinkContext, SinkError

if TYPE_CHECKING:
    from receiver.settings import SinkSettings


class JsonlSink:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._waiting: list[tuple[bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def send(self, event: Mapping[str, Any]) -> int | None:
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n"
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((line.encode(), done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        await done
        return None

    async def _write_all(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await asyncio.to_thread(self._append, b"".join(line for line, _ in group))
            except OSError as exc:
                error = SinkError(f"cannot append to {self.path}: {exc.strerror}")
                _settle(group, error)
            else:
                _settle(group, None)

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    async def aclose(self) -> None:
        if self._writer is not None:
            await self._writer


def _settle(group: list[tuple[bytes, asyncio.Future[None]]], error: SinkError | None) -> None:
    for _, done in group:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


def create(settings: SinkSettings, ctx: SinkContext) -> JsonlSink:
    return JsonlSink(str(settings.options["path"]))
