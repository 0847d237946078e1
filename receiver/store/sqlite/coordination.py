"""SQLite coordination (Coordination): named leases (the poller's leader) and hearing of other
processes' commits, by watching the file's `PRAGMA data_version` (SQLite has no notifications).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

from receiver.store.sqlite.base import SqliteBase
from receiver.store.sqlite.connection import Sql, data_version, store_error

CHANGE_POLL_S = 0.015  # how often wait_for_change looks: a cheap read of a counter
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class SqliteCoordination(SqliteBase):
    async def hold_lease(
        self, name: str, owner: str, ttl_s: float
    ) -> tuple[bool, float | None]:
        return await self._write(_hold_lease, name, owner, time.time(), ttl_s, durable=False)

    async def release_lease(self, name: str, owner: str) -> None:
        await self._write(_release_lease, name, owner, durable=False)

    async def wait_for_change(self, timeout_s: float) -> bool:
        """True as soon as any connection (this process's or another's) commits to the file,
        False after `timeout_s` without one. SQLite has no notifications: this asks the file's
        `PRAGMA data_version` every CHANGE_POLL_S on a connection of its own, inline (see
        base.open_watcher); a file too busy to answer at once counts as changed."""
        if self._watcher is None:
            raise RuntimeError("store is not open")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                version = data_version(self._watcher)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF not in _BUSY:  # BUSY_RECOVERY and the like too
                    raise store_error(exc) from exc
                return True  # busy: someone is writing; the woken loops look for themselves
            except sqlite3.Error as exc:
                raise store_error(exc) from exc
            if version != self._data_version:
                self._data_version = version
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(CHANGE_POLL_S, left))


def _hold_lease(
    conn: Sql, name: str, owner: str, now: float, ttl_s: float
) -> tuple[bool, float | None]:
    """Take the lease if it is free or ran out, or extend it if `owner` holds it."""
    before = conn.execute("SELECT holder, until FROM leases WHERE name = ?", (name,)).fetchone()
    conn.execute(
        "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?3 + ?4)"
        " ON CONFLICT (name) DO UPDATE SET holder = ?2, until = ?3 + ?4"
        " WHERE leases.holder = ?2 OR leases.until < ?3",
        (name, owner, now, ttl_s),
    )
    (holder,) = conn.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
    if holder != owner:
        return False, None
    taken_over = before is not None and before[0] != owner
    return True, float(before[1]) if taken_over else None


def _release_lease(conn: Sql, name: str, owner: str) -> None:
    conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, owner))
