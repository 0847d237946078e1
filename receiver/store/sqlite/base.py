"""The SQLite store's plumbing: its three connections (writer, reader, change watcher), each
with a worker thread; opening (migrate, then end dead processes' claims) and closing; and
`_write`/`_read`, through which every role's statements run.

Every operation is one plain function run on a connection's worker thread, so a whole batch
(dedupe lookups, inserts, commit) costs one hop between the event loop and the database
thread instead of one per statement: under load each hop waits for a busy loop.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import aiosqlite

from receiver.core.errors import StoreUnavailable
from receiver.store.base import SqlStore, Statement
from receiver.store.model import new_owner_id, owner_is_dead
from receiver.store.sql import Dialect
from receiver.store.sqlite.connection import (
    SQL,
    Sql,
    T,
    configure,
    data_version,
    dicts_together,
    exclusive,
    fetch_all,
    in_light_transaction,
    in_transaction,
    run,
)
from receiver.store.sqlite.schema import migrate, unusable, usable_path

DEFAULT_LEASE_S = 300.0


class SqliteBase(SqlStore):
    """What every SQLite role module works through (see receiver.store.sqlite.SqliteStore)."""

    SQL: ClassVar[Dialect] = SQL

    def __init__(
        self,
        path: str,
        *,
        busy_timeout_ms: int = 5000,
        owner: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        writer_process: bool = False,
    ) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.owner = owner or new_owner_id()  # whose claims are ours (one per process)
        self.lease_s = lease_s
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()  # transactions on the writer must not interleave
        # wait_for_change's connection, asked on the event loop's thread (see open_watcher)
        self._watcher: sqlite3.Connection | None = None
        self._lock_fd: int | None = None  # the writers' lock file (see exclusive)
        self._data_version = 0
        # Event batches are committed by a child process (SqliteEvents, ...sqlite.writer).
        self.writer_process = writer_process

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and migrate, or raise StoreUnusable naming the file and the fix. Never
        leaves a connection (a non-daemon thread that would keep the process alive) behind."""
        usable_path(self.path, create=True)
        try:
            self._lock_fd = os.open(f"{self.path}-lock", os.O_RDWR | os.O_CREAT, 0o644)
            self._writer = await self._connect()
            await run(self._writer, migrate, self.path)
            await self._write(release_dead_owners)
            self._reader = await self._connect()
            self._watcher = open_watcher(self.path)
            self._data_version = data_version(self._watcher)
        except BaseException as exc:
            await self.close()
            cause = exc.__cause__ if isinstance(exc, StoreUnavailable) else exc
            if isinstance(cause, sqlite3.Error | OSError):
                raise unusable(self.path, cause, self.busy_timeout_ms) from None
            raise

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await run(db, configure, self.busy_timeout_ms)
        except BaseException:
            await db.close()
            raise
        return db

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
        for db in (self._reader, self._writer):
            if db is not None:
                await db.close()
        self._watcher = self._reader = self._writer = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _write(self, fn: Callable[..., T], *args: Any, durable: bool = True) -> T:
        """Run fn(connection, *args) in ONE transaction on the writer's thread; a durable
        write is fsynced before this returns."""
        if self._writer is None:
            raise RuntimeError("store is not open")
        wrapped = in_transaction if durable else in_light_transaction
        async with self._write_lock:
            return await run(self._writer, exclusive, self._lock_fd, wrapped, fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._reader is None:
            raise RuntimeError("store is not open")
        return await run(self._reader, fn, *args)

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._read(fetch_all, sql, params)

    async def _dicts_together(self, statements: Sequence[Statement]) -> list[list[dict[str, Any]]]:
        return await self._read(dicts_together, statements)  # one hop for all of them

    async def ping(self) -> None:
        """Commit a write that changes nothing: a full disk, a read-only or damaged file or a
        lock held elsewhere fail here as they would fail the next webhook (a read would not)."""
        await self._write(_touch)


def open_watcher(path: str) -> sqlite3.Connection:
    """A read-only connection for `PRAGMA data_version`, called on the event loop's thread.

    The counter is read ~66 times a second; through a connection thread each read was a hop
    whose thread had to win the GIL back from a busy event loop. Asked inline it costs a few
    µs, and with no busy wait it can never hold the loop: a busy file answers at once
    (SQLITE_BUSY), which coordination.wait_for_change reads as "something may have changed"."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA query_only = 1")
    except BaseException:
        conn.close()
        raise
    return conn


def _touch(conn: Sql) -> None:
    # Flipped twice, so the row ends as it was but its page is dirty and really written at the
    # commit (SQLite skips writing a cell overwritten with identical content).
    conn.execute("UPDATE schema_version SET version = -version")
    conn.execute("UPDATE schema_version SET version = -version")


def release_dead_owners(conn: Sql) -> None:
    """End the leases of processes of this host that died (kill -9, a crash): a restart sends
    their rows at once instead of after the lease."""
    owners = conn.execute(
        "SELECT DISTINCT claimed_by FROM deliveries WHERE claimed_by IS NOT NULL"
    ).fetchall()
    dead = [o for (o,) in owners if owner_is_dead(o)]
    conn.executemany(
        "UPDATE deliveries SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = ?",
        [(o,) for o in dead],
    )
