"""JSON Lines file sink: one line per event, flushed and fsynced before it counts as delivered.

For local use, the example config and debugging. Lines that arrive while a write is under way
are written together with one fsync (group commit), so a busy sink costs one fsync per group,
not per event. A replayed event is appended again (the file is a log of deliveries, not a set
of events): dedupe on the line's `id` when reading.

Each append is all-or-nothing: a write or fsync that fails (a full disk, a quota) truncates the
file back to its size before the append, so the retry never lands on half a line. A file that
does not end in a newline (a crash mid-write before this rule, an editor) gets one first.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from handlers.sinks import spec
from handlers.sinks.base import SinkContext, SinkError
from handlers.sinks.spec import Options, SinkSpec
from receiver.core.batching import GroupCommit


class JsonlSink:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._lines: GroupCommit[bytes, None] = GroupCommit(self._write, name="jsonl")

    async def send(self, event: Mapping[str, Any]) -> int | None:
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n"
        await self._lines.submit(line.encode())
        return None

    async def _write(self, lines: list[bytes]) -> None:
        try:
            await asyncio.to_thread(self._append, b"".join(lines))
        except OSError as exc:
            raise SinkError(f"cannot append to {self.path}: {exc.strerror}") from None

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _append_whole(fd, data)
        finally:
            os.close(fd)

    async def aclose(self) -> None:
        await self._lines.drain()


def _append_whole(fd: int, data: bytes) -> None:
    """Append `data` to the file and fsync it, or leave the file as it was and raise OSError."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        data = b"\n" + data  # never glue our first line onto someone's unfinished one
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError:
        os.ftruncate(fd, size)
        raise


# -- configuration ---------------------------------------------------------------------------


def check(options: Options) -> list[str]:
    """The path as a string a file system takes; whether it is writable shows at the first
    append (a directory made later, a disk remounted), so `check` changes nothing."""
    path = options.get("path")
    if isinstance(path, str) and "\x00" in path:
        return ["path contains a NUL character; no file system allows one"]
    return spec.text(options, "path")


def describe(options: Options) -> str:
    return str(options["path"])


def secrets(options: Options) -> list[str]:
    return []  # a file path is no credential


def create(name: str, options: Options, ctx: SinkContext) -> JsonlSink:
    return JsonlSink(options["path"])


SPEC = SinkSpec("jsonl", create, check, describe, secrets, required=frozenset({"path"}))
