"""SQLite retention (Retention): deleting a chosen batch of old events with everything that
hangs off them, ended jobs, and giving freed pages back to the file system. Choosing the
batch is receiver.store.base.RetentionBase's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from receiver.store.base import RetentionBase
from receiver.store.sqlite.base import SqliteBase
from receiver.store.sqlite.connection import Sql, chunks, exclusive, fetch_all, run

RECLAIM_PAGES = 4096  # pages one reclaim_space call gives back (16 MiB at 4 KiB pages)


class SqliteRetention(RetentionBase, SqliteBase):
    async def _count_event_rows(self, ids: list[str]) -> tuple[int, int, int, int]:
        return await self._read(_count_event_rows, ids)

    async def _delete_events(self, ids: list[str], at_bound: str) -> tuple[int, int, int, int]:
        return await self._write(_delete_events, ids, at_bound)

    async def prune_jobs(self, older_than: float, limit: int, *, dry_run: bool = False) -> int:
        if dry_run:  # every one: nothing goes, so a batch could not move on to the next
            [(count,)] = await self._read(
                fetch_all,
                "SELECT COUNT(*) FROM jobs WHERE state != 'watching' AND updated_at < ?",
                (older_than,),
            )
            return int(count)
        rows = await self._read(
            fetch_all,
            "SELECT rowid FROM jobs WHERE state != 'watching' AND updated_at < ? LIMIT ?",
            (older_than, limit),
        )
        if not rows:
            return 0
        return await self._write(_delete_jobs, [r[0] for r in rows], older_than)

    async def reclaim_space(self) -> None:
        if self._writer is None or self._reader is None:
            raise RuntimeError("store is not open")
        async with self._write_lock:  # its own short transaction, between other writes
            # Under the writers' lock like every write: another process's writer (the ingest
            # writer process) waits on the flock for it, not in SQLite's busy handler, which
            # sleeps up to 100 ms between tries.
            await run(self._writer, exclusive, self._lock_fd, _as_is, _incremental_vacuum,
                      RECLAIM_PAGES)
        # Deletes and vacuum fill the WAL; copied back here, on the reader (a passive
        # checkpoint never blocks writers), instead of by the auto-checkpoint inside some
        # webhook's commit. The file is cut to its new size then.
        await run(self._reader, fetch_all, "PRAGMA wal_checkpoint(PASSIVE)", ())

    async def database_size(self) -> int:
        [(pages, size)] = await self._read(
            fetch_all, "SELECT page_count, page_size FROM pragma_page_count, pragma_page_size",
            (),
        )
        return int(pages) * int(size)


def _delete_events(conn: Sql, ids: list[str], at_bound: str) -> tuple[int, int, int, int]:
    """Delete these events (those still old and without a pending delivery: a replay may have
    added one since they were chosen) with their attempts, mirror records and deliveries."""
    counts = [0, 0, 0, 0]
    for chunk in chunks(ids):
        marks = ",".join("?" * len(chunk))
        gone = [
            r[0]
            for r in conn.execute(
                f"SELECT id FROM events WHERE id IN ({marks}) AND received_at < ?"  # noqa: S608
                " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id"
                " AND d.status = 'pending')",
                (*chunk, at_bound),
            )
        ]
        if not gone:
            continue
        marks = ",".join("?" * len(gone))
        counts[2] += conn.execute(
            "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries"  # noqa: S608
            f" WHERE event_id IN ({marks}))",
            gone,
        ).rowcount
        counts[3] += conn.execute(
            f"DELETE FROM mirrors WHERE event_id IN ({marks})", gone  # noqa: S608
        ).rowcount
        counts[1] += conn.execute(
            f"DELETE FROM deliveries WHERE event_id IN ({marks})", gone  # noqa: S608
        ).rowcount
        counts[0] += conn.execute(
            f"DELETE FROM events WHERE id IN ({marks})", gone  # noqa: S608
        ).rowcount
    return counts[0], counts[1], counts[2], counts[3]


def _count_event_rows(conn: Sql, ids: list[str]) -> tuple[int, int, int, int]:
    """What _delete_events would remove (a dry run)."""
    counts = [0, 0, 0, 0]
    for chunk in chunks(ids):
        marks = ",".join("?" * len(chunk))
        [(deliveries, attempts, mirrors)] = conn.execute(
            f"SELECT (SELECT COUNT(*) FROM deliveries WHERE event_id IN ({marks})),"  # noqa: S608
            " (SELECT COUNT(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
            f" WHERE d.event_id IN ({marks})),"
            f" (SELECT COUNT(*) FROM mirrors WHERE event_id IN ({marks}))",
            (*chunk, *chunk, *chunk),
        ).fetchall()
        counts = [counts[0] + len(chunk), counts[1] + deliveries, counts[2] + attempts,
                  counts[3] + mirrors]
    return counts[0], counts[1], counts[2], counts[3]


def _delete_jobs(conn: Sql, rowids: list[int], older_than: float) -> int:
    gone = 0
    for chunk in chunks(rowids):
        marks = ",".join("?" * len(chunk))
        gone += conn.execute(
            f"DELETE FROM jobs WHERE rowid IN ({marks}) AND state != 'watching'"  # noqa: S608
            " AND updated_at < ?",
            (*chunk, older_than),
        ).rowcount
    return gone


def _as_is(conn: Sql, fn: Callable[..., None], *args: Any) -> None:
    """`fn` in no transaction of ours: the vacuum pragma makes its own."""
    fn(conn, *args)


def _incremental_vacuum(conn: Sql, pages: int) -> None:
    """Move up to `pages` free pages to the end of the file and cut them off. The statement
    frees one page per step, and only executescript steps it to the end (execute steps once)."""
    conn.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
