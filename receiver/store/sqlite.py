"""The SQLite store: one file, WAL, a writer connection and a reader connection.

Durability: `synchronous = FULL` in WAL mode fsyncs the log at every commit, so an event whose
200 went out survives a killed process and a lost machine alike. Commits are shared by batches
(see receiver.ingest), which is what keeps that affordable.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from receiver.core.errors import StoreUnavailable
from receiver.core.events import TERMINAL_STATUSES
from receiver.core.outputs import MirroredOutput
from receiver.store.model import (
    Due,
    EventFilter,
    Job,
    NewEvent,
    Outcome,
    Pruned,
    ReplayChunk,
    ReplayScope,
    SchemaTooNew,
    SinkStats,
    Stored,
    StoreUnusable,
    age_bound,
    new_owner_id,
    owner_is_dead,
)
from receiver.store.rows import (
    Batch,
    Written,
    event_doc,
    job_from_row,
    job_row,
    mirror_rows,
    prepare,
    results,
    stored_json,
    with_job_metadata,
)
from receiver.store.sql import (
    DELIVERY_COLUMNS,
    JOB_COLUMNS,
    MIRRORS_SQL,
    PRUNE_CANDIDATES,
    Dialect,
)

# Each entry migrates the schema from version i to i + 1. Append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE events (
            id TEXT PRIMARY KEY,
            idempotency_key TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            source TEXT NOT NULL,
            provider TEXT NOT NULL,
            job_id TEXT,
            status TEXT,
            via TEXT NOT NULL,
            received_at TEXT NOT NULL,
            event_json TEXT NOT NULL,
            raw_body BLOB NOT NULL,
            headers_json TEXT NOT NULL
        )""",
        "CREATE INDEX events_job ON events (source, job_id)",
        "CREATE INDEX events_type ON events (type, id)",
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL REFERENCES events (id),
            sink TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_status_code INTEGER,
            last_error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at)",
        "CREATE INDEX deliveries_event ON deliveries (event_id)",
    ),
    (
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
            started_at REAL NOT NULL,
            duration_ms REAL NOT NULL,
            status_code INTEGER,
            error TEXT,
            outcome TEXT NOT NULL
        )""",
        "CREATE INDEX attempts_delivery ON attempts (delivery_id)",
        "CREATE INDEX deliveries_sink_due ON deliveries (sink, status, next_attempt_at)",
    ),
    (
        """CREATE TABLE jobs (
            source TEXT NOT NULL,
            job_id TEXT NOT NULL,
            state TEXT NOT NULL,
            metadata_json TEXT NOT NULL,
            created_at REAL NOT NULL,
            deadline_at REAL NOT NULL,
            next_poll_at REAL NOT NULL,
            interval_s REAL NOT NULL DEFAULT 0,
            polls INTEGER NOT NULL DEFAULT 0,
            not_found INTEGER NOT NULL DEFAULT 0,
            last_status TEXT,
            last_error TEXT,
            updated_at REAL NOT NULL,
            PRIMARY KEY (source, job_id)
        )""",
        "CREATE INDEX jobs_due ON jobs (state, next_poll_at)",
    ),
    (
        # Replays add rows like the routes do; these say which kind a row is and what it repeats.
        "ALTER TABLE deliveries ADD COLUMN cause TEXT NOT NULL DEFAULT 'route'",
        "ALTER TABLE deliveries ADD COLUMN replay_of INTEGER REFERENCES deliveries (id)",
    ),
    (
        # Claims are leases in rows, so any number of processes can share the file: a worker
        # that dies holds its rows only until lease_until.
        "ALTER TABLE deliveries ADD COLUMN claimed_by TEXT",
        "ALTER TABLE deliveries ADD COLUMN lease_until REAL",
        # (what is due is found through deliveries_sink_due; live leases through this one)
        "CREATE INDEX deliveries_leased ON deliveries (sink, lease_until)"
        " WHERE claimed_by IS NOT NULL",
        # Named leases: the poller's leader (exactly one process polls at a time).
        "CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until REAL NOT NULL)",
        # Events of one source, newest first, without sorting all of them (the admin API's and
        # the UI's source filter: 4.3 s on 1M events without it, bench/ui).
        "CREATE INDEX events_source ON events (source, id)",
    ),
    (
        # Where a mirroring s3 sink copied each output of an event (receiver.core.outputs).
        """CREATE TABLE mirrors (
            event_id TEXT NOT NULL REFERENCES events (id),
            sink TEXT NOT NULL,
            idx INTEGER NOT NULL,
            bucket TEXT NOT NULL,
            object_key TEXT NOT NULL,
            content_type TEXT NOT NULL,
            mirrored_at REAL NOT NULL,
            PRIMARY KEY (event_id, sink, idx)
        )""",
        # Deleting a delivery (retention) checks that no replay refers to it: without this
        # index that check scans every delivery, per deleted row (0.66 s for 500 events).
        "CREATE INDEX deliveries_replay_of ON deliveries (replay_of)"
        " WHERE replay_of IS NOT NULL",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
_CHUNK = 500  # rows or values per statement: far below SQLite's 32766 parameters
DEFAULT_LEASE_S = 300.0
SQL = Dialect("?")
CHANGE_POLL_S = 0.015  # how often wait_for_change looks: a cheap read of a counter
RECLAIM_PAGES = 4096  # pages one reclaim_space call gives back (16 MiB at 4 KiB pages)


Sql = sqlite3.Connection
T = TypeVar("T")


class SqliteStore:
    """Store on one SQLite file.

    Every operation is one plain function run on an aiosqlite connection's worker thread, so a
    whole batch (dedupe lookups, inserts, commit) costs one hop between the event loop and the
    database thread instead of one per statement: under load each hop waits for a busy loop.
    """

    def __init__(
        self,
        path: str,
        *,
        busy_timeout_ms: int = 5000,
        owner: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.owner = owner or new_owner_id()  # whose claims are ours (one per process)
        self.lease_s = lease_s
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()  # transactions on the writer must not interleave
        self._watcher: aiosqlite.Connection | None = None  # wait_for_change's connection
        self._lock_fd: int | None = None  # the writers' lock file (see _exclusive)
        self._data_version = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and migrate, or raise StoreUnusable naming the file and the fix. Never
        leaves a connection (a non-daemon thread that would keep the process alive) behind."""
        usable_path(self.path, create=True)
        try:
            self._lock_fd = os.open(f"{self.path}-lock", os.O_RDWR | os.O_CREAT, 0o644)
            self._writer = await self._connect()
            await _run(self._writer, _migrate, self.path)
            await self._write(_release_dead_owners)
            self._reader = await self._connect()
            self._watcher = await self._connect()
            self._data_version = await _run(self._watcher, _data_version)
        except BaseException as exc:
            await self.close()
            cause = exc.__cause__ if isinstance(exc, StoreUnavailable) else exc
            if isinstance(cause, sqlite3.Error | OSError):
                raise unusable(self.path, cause, self.busy_timeout_ms) from None
            raise

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            # Takes effect only on a new file (before WAL and the first table): pruning can
            # then give pages back to the OS (PRAGMA incremental_vacuum). An older file reuses
            # freed pages instead; a one-time VACUUM converts it (README, Retention).
            async with db.execute("PRAGMA page_count") as cursor:
                if await cursor.fetchone() == (0,):  # a new file (setting it again writes it)
                    await db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = FULL")
            await db.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            await db.close()
            raise
        return db

    async def close(self) -> None:
        for db in (self._watcher, self._reader, self._writer):
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
        wrapped = _in_transaction if durable else _in_light_transaction
        async with self._write_lock:
            return await _run(self._writer, _exclusive, self._lock_fd, wrapped, fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._reader is None:
            raise RuntimeError("store is not open")
        return await _run(self._reader, fn, *args)

    async def hold_lease(
        self, name: str, owner: str, ttl_s: float
    ) -> tuple[bool, float | None]:
        return await self._write(_hold_lease, name, owner, time.time(), ttl_s, durable=False)

    async def release_lease(self, name: str, owner: str) -> None:
        await self._write(_release_lease, name, owner, durable=False)

    async def count_jobs(self, state: str) -> int:
        [(count,)] = await self._read(
            _fetch_all, "SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)
        )
        return int(count)

    async def wait_for_change(self, timeout_s: float) -> bool:
        """True as soon as any connection (this process's or another's) commits to the file,
        False after `timeout_s` without one. SQLite has no notifications: this asks the file's
        `PRAGMA data_version` every CHANGE_POLL_S on a connection of its own."""
        if self._watcher is None:
            raise RuntimeError("store is not open")
        deadline = time.monotonic() + timeout_s
        while True:
            version = await _run(self._watcher, _data_version)
            if version != self._data_version:
                self._data_version = version
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(CHANGE_POLL_S, left))

    async def ping(self) -> None:
        """Commit a write that changes nothing: a full disk, a read-only or damaged file or a
        lock held elsewhere fail here as they would fail the next webhook (a read would not)."""
        await self._write(_touch)

    # -- writing ---------------------------------------------------------------------------

    async def write_events(self, items: Sequence[NewEvent]) -> list[Stored]:
        batch, positions = prepare(items, time.time())
        written = await self._write(_write_batch, batch)
        return results(batch, positions, written)

    # -- delivering ------------------------------------------------------------------------

    async def claim_due(
        self,
        sink: str,
        now: float,
        limit: int,
        lease_s: float | None = None,
        *,
        waiting_for: str | None = None,
    ) -> list[Due]:
        until = now + (lease_s or self.lease_s)
        # A claim need not survive a power cut (the row would simply be sent again), so it
        # skips the fsync: the next durable commit writes it out with its own.
        rows = await self._write(
            _claim, sink, now, limit, self.owner, until, waiting_for, durable=False
        )
        return [Due(r[0], sink, r[1], event_doc(r[2], r[3]), until) for r in rows]

    async def next_due_at(self, sink: str, *, waiting_for: str | None = None) -> float | None:
        # The first free row by the index; a row under a live lease is due when the lease ends
        # (its holder may have died), found through the small index of leased rows.
        settled = _settled("d", "?3") if waiting_for else ""
        [(free, leased)] = await self._read(
            _fetch_all,
            "SELECT (SELECT d.next_attempt_at FROM deliveries d WHERE d.sink = ?1"  # noqa: S608
            " AND d.status = 'pending' AND (d.lease_until IS NULL OR d.lease_until <= ?2)"
            f"{settled} ORDER BY d.next_attempt_at LIMIT 1),"
            " (SELECT MIN(d.lease_until) FROM deliveries d WHERE d.sink = ?1"
            " AND d.claimed_by IS NOT NULL AND d.lease_until > ?2 AND d.status = 'pending'"
            f"{settled})",
            (sink, time.time(), waiting_for) if waiting_for else (sink, time.time()),
        )
        found = [float(at) for at in (free, leased) if at is not None]
        return min(found) if found else None

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        await self._write(_record_outcomes, outcomes, self.owner)

    async def renew(self, delivery_ids: Sequence[int], until: float) -> int:
        return await self._write(_renew, delivery_ids, self.owner, until, durable=False)

    async def release(self, delivery_ids: Sequence[int]) -> None:
        await self._write(_renew, delivery_ids, self.owner, None, durable=False)

    async def delivery_counts(self) -> dict[tuple[str, str], int]:
        rows = await self._read(
            _fetch_all, "SELECT sink, status, COUNT(*) FROM deliveries GROUP BY sink, status", ()
        )
        return {(r[0], r[1]): int(r[2]) for r in rows}

    # -- watched jobs ----------------------------------------------------------------------

    async def watch_job(self, job: Job) -> tuple[Job, bool]:
        return await self._write(_insert_job, job)

    async def due_jobs(self, now: float, limit: int, exclude: set[tuple[str, str]]) -> list[Job]:
        rows = await self._read(
            _fetch_all,
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'watching' AND next_poll_at <= ?"  # noqa: S608
            " ORDER BY next_poll_at LIMIT ?",
            (now, limit + len(exclude)),
        )
        jobs = [job_from_row(r) for r in rows]
        return [j for j in jobs if (j.source, j.job_id) not in exclude][:limit]

    async def next_job_due_at(self) -> float | None:
        [(at,)] = await self._read(
            _fetch_all, "SELECT MIN(next_poll_at) FROM jobs WHERE state = 'watching'", ()
        )
        return None if at is None else float(at)

    async def save_jobs(self, jobs: Sequence[Job]) -> None:
        await self._write(_update_jobs, jobs)

    async def get_job(self, source: str, job_id: str) -> Job | None:
        rows = await self._read(
            _fetch_all,
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE source = ? AND job_id = ?",  # noqa: S608
            (source, job_id),
        )
        return job_from_row(rows[0]) if rows else None

    async def list_jobs(
        self,
        source: str | None = None,
        state: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[Job]:
        where, params = SQL.equals("", source=source, state=state)
        if after is not None:
            where.append("(source > ? OR (source = ? AND job_id > ?))")
            params.extend([after[0], after[0], after[1]])
        sql = (
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)}"  # noqa: S608
            " ORDER BY source, job_id LIMIT ?"
        )
        return [job_from_row(r) for r in await self._read(_fetch_all, sql, (*params, limit))]

    async def delete_job(self, source: str, job_id: str) -> bool:
        return await self._write(_delete_job, source, job_id)

    # -- reading ---------------------------------------------------------------------------

    async def count_events(self) -> int:
        [(count,)] = await self._read(_fetch_all, "SELECT COUNT(*) FROM events", ())
        return int(count)

    async def get_event(self, event_id: str) -> dict[str, Any] | None:
        return await self._read(_get_event, event_id)

    async def list_events(
        self, where: EventFilter, before: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        clauses, params = SQL.event_where(where, "events")
        if before is not None:
            clauses.append("id < ?")
            params.append(before)
        sql = (
            f"SELECT event_json FROM events WHERE {' AND '.join(clauses)}"  # noqa: S608
            " ORDER BY id DESC LIMIT ?"
        )
        return [stored_json(r[0]) for r in await self._read(_fetch_all, sql, (*params, limit))]

    async def list_deliveries(
        self,
        status: str | None = None,
        sink: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        clauses, params = SQL.equals("", status=status, sink=sink)
        if after is not None:
            clauses.append("id > ?")
            params.append(after)
        sql = (
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {' AND '.join(clauses)}"  # noqa: S608
            " ORDER BY id LIMIT ?"
        )
        return await self._read(_dicts, sql, (*params, limit))

    async def retry_delivery(self, delivery_id: int, now: float) -> tuple[dict[str, Any], bool]:
        return await self._write(_retry_delivery, delivery_id, now)

    async def add_replays(self, pairs: Sequence[tuple[str, str]], now: float) -> list[int]:
        return await self._write(_add_replays, pairs, now)

    async def replay_horizon(self) -> tuple[int, int]:
        [(events, deliveries)] = await self._read(
            _fetch_all,
            "SELECT (SELECT COALESCE(MAX(rowid), 0) FROM events),"
            " (SELECT COALESCE(MAX(id), 0) FROM deliveries)",
            (),
        )
        return int(events), int(deliveries)

    async def event_kinds(self, where: EventFilter, upto: int) -> dict[tuple[str, str], int]:
        clauses, params = SQL.event_where(where, "events")
        sql = (
            f"SELECT source, type, COUNT(*) FROM events WHERE {' AND '.join(clauses)}"  # noqa: S608
            " AND rowid <= ? GROUP BY source, type"
        )
        rows = await self._read(_fetch_all, sql, (*params, upto))
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def count_latest(self, scope: ReplayScope) -> tuple[int, int]:
        where, params = SQL.latest_where(scope)
        sql = (
            "SELECT COUNT(DISTINCT d.event_id), COUNT(*) FROM deliveries d"  # noqa: S608
            f" JOIN events e ON e.id = d.event_id WHERE {where}"
        )
        [(events, deliveries)] = await self._read(_fetch_all, sql, params)
        return int(events), int(deliveries)

    async def replay_chunk(
        self, scope: ReplayScope, after: int, limit: int, now: float
    ) -> ReplayChunk:
        chooser = _latest_pairs if scope.delivery_status is not None else _routed_pairs
        return await self._write(_replay_chunk, chooser, scope, after, limit, now)

    async def pending_stats(self) -> tuple[int, float | None]:
        [(count, oldest)] = await self._read(
            _fetch_all,
            "SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE status = 'pending'",
            (),
        )
        return int(count), None if oldest is None else float(oldest)

    async def latest_statuses(self, event_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        return await self._read(_latest_statuses, list(event_ids))

    async def sink_stats(
        self, sinks: Sequence[str], since: float, cap: int
    ) -> dict[str, SinkStats]:
        return await self._read(_sink_stats, list(sinks), since, cap)

    # -- retention and durable outputs -----------------------------------------------------

    async def prune(
        self, older_than: float, after: str | None, limit: int, *, dry_run: bool = False
    ) -> Pruned:
        # The batch is chosen on the reader, so the writer is held only for the deletes (and
        # not at all when nothing goes); the writer checks the conditions again.
        id_bound, at_bound = age_bound(older_than)
        rows = await self._read(_fetch_all, PRUNE_CANDIDATES, (at_bound, after or "", id_bound,
                                                                limit))
        position = rows[-1][0] if len(rows) == limit else None
        ids = [r[0] for r in rows if r[1]]
        if not ids:
            return Pruned(after=position)
        if dry_run:
            counts = await self._read(_count_event_rows, ids)
        else:
            counts = await self._write(_delete_events, ids, at_bound)
        return Pruned(*counts, after=position)

    async def prune_jobs(self, older_than: float, limit: int, *, dry_run: bool = False) -> int:
        rows = await self._read(
            _fetch_all,
            "SELECT rowid FROM jobs WHERE state != 'watching' AND updated_at < ? LIMIT ?",
            (older_than, limit),
        )
        if dry_run or not rows:
            return len(rows)
        return await self._write(_delete_jobs, [r[0] for r in rows], older_than)

    async def reclaim_space(self) -> None:
        if self._writer is None or self._reader is None:
            raise RuntimeError("store is not open")
        async with self._write_lock:  # its own short transaction, between other writes
            await _run(self._writer, _incremental_vacuum, RECLAIM_PAGES)
        # Deletes and vacuum fill the WAL; copied back here, on the reader (a passive
        # checkpoint never blocks writers), instead of by the auto-checkpoint inside some
        # webhook's commit. The file is cut to its new size then.
        await _run(self._reader, _fetch_all, "PRAGMA wal_checkpoint(PASSIVE)", ())

    async def database_size(self) -> int:
        [(pages, size)] = await self._read(
            _fetch_all, "SELECT page_count, page_size FROM pragma_page_count, pragma_page_size",
            (),
        )
        return int(pages) * int(size)

    async def mirrors_of(
        self, event_ids: Sequence[str], sink: str
    ) -> dict[str, list[MirroredOutput]]:
        return await self._read(_mirrors_of, list(event_ids), sink)


# -- functions that run on a connection's thread ---------------------------------------------


async def _run(db: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """fn(sqlite3 connection, *args) on the aiosqlite connection's worker thread, one hop.

    aiosqlite runs each of its own methods this way (`Connection._execute`); it has no public
    name for running a whole function, so the private one is used here and only here.
    """
    try:
        result: T = await db._execute(lambda: fn(db._conn, *args))  # type: ignore[no-untyped-call]
    except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
        if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError | sqlite3.ProgrammingError):
            raise  # this item's data, not the store: the caller's problem
        # Translated here, at the boundary: callers see the store's own error, not the driver's.
        raise StoreUnavailable(f"the SQLite store failed: {exc}"[:300]) from exc
    return result


def _in_transaction(conn: Sql, fn: Callable[..., T], *args: Any) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _exclusive(
    conn: Sql, lock_fd: int | None, wrapped: Callable[..., T], fn: Callable[..., T], *args: Any
) -> T:
    """Run one write transaction holding the file's writers' lock (`flock` on PATH-lock).
    Several processes write one SQLite file (serve --workers, a worker, the CLI); without this
    they meet in SQLite's own busy handler, which sleeps 1 to 100 ms between tries and made two
    web processes slower than one. A blocked flock wakes the moment the holder lets go."""
    if lock_fd is None:
        return wrapped(conn, fn, *args)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        return wrapped(conn, fn, *args)
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)


def _in_light_transaction(conn: Sql, fn: Callable[..., T], *args: Any) -> T:
    """A transaction that is atomic but not fsynced at commit (WAL, synchronous = NORMAL)."""
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        return _in_transaction(conn, fn, *args)
    finally:
        conn.execute("PRAGMA synchronous = FULL")


def _settled(alias: str, mark: str) -> str:
    """A condition on deliveries `alias`: its event has no pending delivery to the sink named
    by the parameter `mark` (the mirror a sink with outputs_from waits for has settled)."""
    return (
        f" AND NOT EXISTS (SELECT 1 FROM deliveries m WHERE m.event_id = {alias}.event_id"  # noqa: S608
        f" AND m.sink = {mark} AND m.status = 'pending')"
    )


def _claim(
    conn: Sql,
    sink: str,
    now: float,
    limit: int,
    owner: str,
    until: float,
    waiting_for: str | None = None,
) -> list[tuple[Any, ...]]:
    """Lease up to `limit` due rows of `sink` to `owner`; (id, attempts, event_json, raw_body)."""
    settled = _settled("d", "?") if waiting_for else ""
    claimed = conn.execute(
        "UPDATE deliveries SET claimed_by = ?, lease_until = ? WHERE id IN ("  # noqa: S608
        " SELECT d.id FROM deliveries d WHERE d.sink = ? AND d.status = 'pending'"
        f" AND d.next_attempt_at <= ? AND (d.lease_until IS NULL OR d.lease_until <= ?){settled}"
        " ORDER BY d.next_attempt_at, d.id LIMIT ?) RETURNING id, attempts, event_id",
        (owner, until, sink, now, now, *((waiting_for,) if waiting_for else ()), limit),
    ).fetchall()
    if not claimed:
        return []
    bodies = {
        r[0]: (r[1], r[2])
        for r in _events_where_in(
            conn, "id, event_json, raw_body", "id", [c[2] for c in claimed]
        )
    }
    claimed.sort(key=lambda c: c[0])
    return [(c[0], c[1], *bodies[c[2]]) for c in claimed]


def _release_dead_owners(conn: Sql) -> None:
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


def _renew(conn: Sql, ids: Sequence[int], owner: str, until: float | None) -> int:
    """Move the lease end of `owner`'s rows among `ids` (None: give them back)."""
    changed = 0
    for chunk in _chunks(list(ids)):
        marks = ",".join("?" * len(chunk))
        claimed_by = owner if until is not None else None
        cur = conn.execute(
            f"UPDATE deliveries SET claimed_by = ?, lease_until = ? WHERE id IN ({marks})"  # noqa: S608
            " AND claimed_by = ? AND status = 'pending'",
            (claimed_by, until, *chunk, owner),
        )
        changed += cur.rowcount
    return changed


def _data_version(conn: Sql) -> int:
    (version,) = conn.execute("PRAGMA data_version").fetchone()
    return int(version)


def _fetch_all(conn: Sql, sql: str, params: Sequence[Any]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


def _touch(conn: Sql) -> None:
    # Flipped twice, so the row ends as it was but its page is dirty and really written at the
    # commit (SQLite skips writing a cell overwritten with identical content).
    conn.execute("UPDATE schema_version SET version = -version")
    conn.execute("UPDATE schema_version SET version = -version")


def usable_path(path: str, *, create: bool) -> None:
    """StoreUnusable unless `path` can hold a SQLite database this user can write: a file (or
    nothing yet) in a writable directory. With `create`, make missing directories."""
    file = Path(path)
    if file.is_dir():
        raise StoreUnusable(
            f"{path} is a directory, not a database file; point [server] database at a file "
            f"in it, e.g. sqlite:///{file / 'hookyard.db'}"
        )
    parent = next((p for p in file.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise StoreUnusable(
            f"cannot put the database at {path}: {parent} is a file, not a directory; "
            "fix [server] database"
        )
    if create:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnusable(
                f"cannot create the directory {file.parent} for the database {path}: "
                f"{exc.strerror}; create it or fix [server] database"
            ) from None
        parent = file.parent
    # WAL mode creates `-wal` and `-shm` files next to the database, so the directory must be
    # writable even when the file exists.
    if not os.access(parent, os.W_OK | os.X_OK) or (
        file.exists() and not os.access(file, os.R_OK | os.W_OK)
    ):
        raise StoreUnusable(
            f"cannot write the database {path}: this user ({os.getuid()}) needs read and "
            f"write access to the file and to its directory {parent}; fix the permissions "
            "or [server] database"
        )


def unusable(path: str, exc: BaseException, busy_timeout_ms: int = 0) -> StoreUnusable:
    """A driver error met while opening `path`, as a message that says what to do."""
    if isinstance(exc, StoreUnusable):
        return exc
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
        fix = (
            "is not a SQLite database (damaged, or another kind of file); move it aside "
            "(hookyard then starts a new one) or point [server] database at the right file"
        )
    elif "locked" in text or "busy" in text:
        fix = (
            f"is locked by another process (waited {busy_timeout_ms / 1000:g} s); stop the "
            "program holding it (a sqlite3 shell, a backup, another hookyard) and start again"
        )
    elif "readonly" in text or "read-only" in text:
        fix = "is read-only for this user; fix the permissions of the file and its directory"
    elif "full" in text or "disk I/O" in text:
        fix = f"cannot be written ({text}); free disk space and check the disk"
    elif "unable to open" in text:
        fix = "cannot be opened; check that its directory exists and this user may write there"
    else:
        fix = f"cannot be used ({type(exc).__name__}: {text}); check the file and its directory"
    return StoreUnusable(f"the database {path} {fix}")


def check_file(path: str, busy_timeout_ms: int = 1000) -> None:
    """Whether `path` would open, without creating or changing anything (`hookyard check`)."""
    usable_path(path, create=False)
    if not Path(path).exists():
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=busy_timeout_ms / 1000)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            if "schema_version" in tables:
                _check_version(conn, path)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise unusable(path, exc, busy_timeout_ms) from None


def _check_version(conn: Sql, path: str) -> int:
    (current,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database {path} has schema version {current}, newer than this hookyard "
            f"understands ({SCHEMA_VERSION}); run the newer hookyard that wrote it, or "
            "upgrade hookyard"
        )
    return int(current)


def _migrate(conn: Sql, path: str) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    _in_transaction(conn, _apply_migrations, path)


def _apply_migrations(conn: Sql, path: str) -> None:
    current = _check_version(conn, path)
    for version in range(current, SCHEMA_VERSION):
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))


def _write_batch(conn: Sql, batch: Batch) -> Written:
    """Runs on the database thread, inside the transaction."""
    suppressed = batch.suppressed | _finished_elsewhere(conn, batch.maybe_late)
    if batch.jobs:
        with_job_metadata(batch, _job_metadata(conn, list(batch.jobs)))
        _end_jobs(conn, batch.finished_jobs, time.time())
    before = conn.total_changes
    for sql, params in _multi_row(
        "INSERT INTO events (id, idempotency_key, type, source, provider, job_id, status, via,"
        " received_at, event_json, raw_body, headers_json) VALUES ",
        batch.event_rows,
        " ON CONFLICT (idempotency_key) DO NOTHING",
    ):
        conn.execute(sql, params)
    # Usually every row is new. Only when some were duplicates, ask which (RETURNING would
    # cost a statement step, hence a GIL hand-off, per row every time).
    if conn.total_changes - before == len(batch.ids):
        inserted = set(batch.ids)
    else:
        inserted = _existing_ids(conn, batch.ids)
    rows = [d for d in batch.deliveries if d[0] in inserted and d[0] not in suppressed]
    for sql, params in _multi_row(
        "INSERT INTO deliveries (event_id, sink, status, next_attempt_at, created_at,"
        " updated_at) VALUES ",
        rows,
    ):
        conn.execute(sql, params)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[0]] = counts.get(row[0], 0) + 1
    missing = [k for k, i in zip(batch.keys, batch.ids, strict=True) if i not in inserted]
    return Written(inserted, _ids_by_key(conn, missing) if missing else {}, counts)


def _multi_row(
    head: str, rows: list[tuple[Any, ...]], tail: str = ""
) -> Iterable[tuple[str, list[Any]]]:
    """One statement per chunk of rows (multi-row VALUES) instead of one step per row."""
    if not rows:
        return
    marks = "(" + ",".join("?" * len(rows[0])) + ")"
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        yield head + ",".join([marks] * len(chunk)) + tail, [v for row in chunk for v in row]


def _events_where_in(conn: Sql, select: str, column: str, values: list[str]) -> list[Any]:
    """`SELECT {select} FROM events WHERE {column} IN (values)`, in chunks under SQLite's
    parameter limit; only placeholders carry values."""
    rows: list[Any] = []
    for chunk in _chunks(sorted(set(values))):
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT {select} FROM events WHERE {column} IN ({marks})"  # noqa: S608
        rows.extend(conn.execute(sql, chunk).fetchall())
    return rows


def _existing_ids(conn: Sql, ids: list[str]) -> set[str]:
    return {row[0] for row in _events_where_in(conn, "id", "id", ids)}


def _ids_by_key(conn: Sql, keys: list[str]) -> dict[str, str]:
    return dict(_events_where_in(conn, "idempotency_key, id", "idempotency_key", keys))


def _finished_elsewhere(conn: Sql, jobs: dict[str, tuple[str, str]]) -> set[str]:
    """The ids (keys of `jobs`) whose job already has a terminal event in the log."""
    sql = "SELECT 1 FROM events WHERE source = ? AND job_id = ? AND status IN (?, ?, ?) LIMIT 1"
    terminal = sorted(TERMINAL_STATUSES)
    return {
        event_id
        for event_id, job in jobs.items()
        if conn.execute(sql, (*job, *terminal)).fetchone() is not None
    }


def _insert_job(conn: Sql, job: Job) -> tuple[Job, bool]:
    before = conn.total_changes
    conn.execute(
        f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
        " ON CONFLICT (source, job_id) DO NOTHING",
        job_row(job),
    )
    if conn.total_changes > before:
        return job, True
    row = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE source = ? AND job_id = ?",  # noqa: S608
        (job.source, job.job_id),
    ).fetchone()
    return job_from_row(row), False


def _job_metadata(conn: Sql, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(source, job id) → metadata JSON text of the watched jobs among `keys`."""
    found: dict[tuple[str, str], str] = {}
    for chunk in _chunks(keys):
        marks = ",".join(["(?, ?)"] * len(chunk))
        sql = (
            "SELECT source, job_id, metadata_json FROM jobs"  # noqa: S608
            f" WHERE (source, job_id) IN (VALUES {marks})"
        )
        for source, job_id, metadata in conn.execute(sql, [v for key in chunk for v in key]):
            found[(source, job_id)] = metadata
    return found


def _update_jobs(conn: Sql, jobs: Sequence[Job]) -> None:
    """Only jobs still watching change: a job another process (or a terminal event) ended
    stays ended, whatever an earlier reading of it said."""
    conn.executemany(
        "UPDATE jobs SET state = ?, metadata_json = ?, created_at = ?, deadline_at = ?,"
        " next_poll_at = ?, interval_s = ?, polls = ?, not_found = ?, last_status = ?,"
        " last_error = ?, updated_at = ? WHERE source = ? AND job_id = ? AND state = 'watching'",
        [(*job_row(job)[2:], job.source, job.job_id) for job in jobs],
    )


def _end_jobs(conn: Sql, ends: Mapping[tuple[str, str], str], now: float) -> None:
    """Watched jobs whose terminal event is in this transaction end with it."""
    conn.executemany(
        "UPDATE jobs SET state = ?, updated_at = ? WHERE source = ? AND job_id = ?"
        " AND state = 'watching'",
        [(state, now, source, job_id) for (source, job_id), state in sorted(ends.items())],
    )


def _delete_job(conn: Sql, source: str, job_id: str) -> bool:
    cur = conn.execute("DELETE FROM jobs WHERE source = ? AND job_id = ?", (source, job_id))
    return cur.rowcount > 0


def _record_outcomes(conn: Sql, outcomes: Sequence[Outcome], owner: str) -> None:
    """Every attempt is logged; a delivery's state changes only while `owner` still holds its
    lease (a worker whose lease ran out must not overwrite what the next holder did)."""
    conn.executemany(
        "INSERT INTO attempts (delivery_id, started_at, duration_ms, status_code, error, outcome)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                o.delivery_id,
                o.started_at,
                round(o.duration_s * 1000, 3),
                o.status_code,
                o.error,
                o.status,
            )
            for o in outcomes
        ],
    )
    conn.executemany(
        "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?,"
        " last_status_code = ?, last_error = ?, updated_at = ?, claimed_by = NULL,"
        " lease_until = NULL WHERE id = ? AND claimed_by = ?",
        [
            (
                o.status,
                o.attempts,
                o.next_attempt_at,
                o.status_code,
                o.error,
                o.started_at + o.duration_s,
                o.delivery_id,
                owner,
            )
            for o in outcomes
        ],
    )
    conn.executemany(
        "INSERT INTO mirrors (event_id, sink, idx, bucket, object_key, content_type,"
        " mirrored_at) SELECT event_id, ?, ?, ?, ?, ?, ? FROM deliveries WHERE id = ?"
        " ON CONFLICT (event_id, sink, idx) DO UPDATE SET bucket = excluded.bucket,"
        " object_key = excluded.object_key, content_type = excluded.content_type,"
        " mirrored_at = excluded.mirrored_at",
        mirror_rows(outcomes),
    )


def _get_event(conn: Sql, event_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT event_json, raw_body FROM events WHERE id = ?", (event_id,)
    ).fetchone()
    if row is None:
        return None
    event = event_doc(row[0], row[1])
    deliveries = _dicts(
        conn,
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ? ORDER BY id",  # noqa: S608
        (event_id,),
    )
    attempts = _dicts(
        conn,
        "SELECT a.delivery_id, a.started_at, a.duration_ms, a.status_code, a.error, a.outcome"
        " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
        " WHERE d.event_id = ? ORDER BY a.id",
        (event_id,),
    )
    for delivery in deliveries:
        delivery["attempt_log"] = [
            {k: v for k, v in a.items() if k != "delivery_id"}
            for a in attempts
            if a["delivery_id"] == delivery["id"]
        ]
    event["deliveries"] = deliveries
    event["mirrors"] = _dicts(conn, MIRRORS_SQL, (event_id,))
    return event


def _retry_delivery(conn: Sql, delivery_id: int, now: float) -> tuple[dict[str, Any], bool]:
    sql = f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?"  # noqa: S608
    found = _dicts(conn, sql, (delivery_id,))
    if not found:
        raise KeyError(delivery_id)
    if found[0]["status"] == "pending":
        return found[0], False
    conn.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, updated_at = ?"
        " WHERE id = ?",
        (now, now, delivery_id),
    )
    return _dicts(conn, sql, (delivery_id,))[0], True


def _add_replays(conn: Sql, pairs: Sequence[tuple[str, str]], now: float) -> list[int]:
    if not pairs:
        return []
    conn.executemany(
        "INSERT INTO deliveries (event_id, sink, status, next_attempt_at, created_at, updated_at,"
        " cause, replay_of) VALUES (?, ?, 'pending', ?, ?, ?, 'replay',"
        " (SELECT MAX(id) FROM deliveries WHERE event_id = ? AND sink = ?))",
        [(event_id, sink, now, now, now, event_id, sink) for event_id, sink in pairs],
    )
    # AUTOINCREMENT ids in one write transaction are consecutive.
    (last,) = conn.execute("SELECT last_insert_rowid()").fetchone()
    return list(range(last - len(pairs) + 1, last + 1))


Chooser = Callable[[Sql, ReplayScope, int, int], tuple[int | None, list[tuple[str, str]]]]


def _replay_chunk(
    conn: Sql, choose: Chooser, scope: ReplayScope, after: int, limit: int, now: float
) -> ReplayChunk:
    position, pairs = choose(conn, scope, after, limit)
    _add_replays(conn, pairs, now)
    return ReplayChunk(position, frozenset(e for e, _ in pairs), len(pairs))


def _latest_pairs(
    conn: Sql, scope: ReplayScope, after: int, limit: int
) -> tuple[int | None, list[tuple[str, str]]]:
    where, params = SQL.latest_where(scope)
    sql = (
        "SELECT d.id, d.event_id, d.sink FROM deliveries d"  # noqa: S608
        f" JOIN events e ON e.id = d.event_id WHERE {where} AND d.id > ? ORDER BY d.id LIMIT ?"
    )
    rows = conn.execute(sql, (*params, after, limit)).fetchall()
    position = rows[-1][0] if len(rows) == limit else None
    return position, [(r[1], r[2]) for r in rows]


def _routed_pairs(
    conn: Sql, scope: ReplayScope, after: int, limit: int
) -> tuple[int | None, list[tuple[str, str]]]:
    clauses, params = SQL.event_where(scope.filter, "events")
    sql = (
        f"SELECT rowid, id, source, type FROM events WHERE {' AND '.join(clauses)}"  # noqa: S608
        " AND rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
    )
    rows = conn.execute(sql, (*params, after, scope.upto, limit)).fetchall()
    position = rows[-1][0] if len(rows) == limit else None
    pairs = [
        (event_id, sink)
        for _, event_id, source, type_ in rows
        for sink in (scope.sinks or scope.routes.get((source, type_), ()))
    ]
    return position, pairs


def _dicts(conn: Sql, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cur = conn.execute(sql, params)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


# -- the JSON boundary: only strict JSON is written, so every read gives strict JSON back ----


def _chunks(values: Sequence[T]) -> Iterable[list[T]]:
    for start in range(0, len(values), _CHUNK):
        yield list(values[start : start + _CHUNK])


def _latest_statuses(conn: Sql, event_ids: list[str]) -> dict[str, dict[str, str]]:
    """Rows come by id, so a later delivery of the same (event, sink) overwrites an earlier."""
    found: dict[str, dict[str, str]] = {}
    for chunk in _chunks(sorted(set(event_ids))):
        marks = ",".join("?" * len(chunk))
        sql = (
            "SELECT event_id, sink, status FROM deliveries"  # noqa: S608
            f" WHERE event_id IN ({marks}) ORDER BY id"
        )
        for event_id, sink, status in conn.execute(sql, chunk):
            found.setdefault(event_id, {})[sink] = status
    return found


# Attempts are inserted when their outcome is recorded, so their ids follow the time they
# ended (started_at + duration) up to the outcome writer's batching, far under this margin.
_ATTEMPT_ORDER_SLACK_S = 300.0


def _sink_stats(conn: Sql, sinks: list[str], since: float, cap: int) -> dict[str, SinkStats]:
    pending = {sink: _pending_of(conn, sink, cap) for sink in sinks}
    ended, exact = _ended_since(conn, since, cap)
    return {
        sink: SinkStats(
            pending=pending[sink][0],
            oldest_pending_at=pending[sink][1],
            delivered=ended.get((sink, "delivered"), 0),
            dead=ended.get((sink, "dead"), 0),
            exact=exact,
        )
        for sink in sinks
    }


def _pending_of(conn: Sql, sink: str, cap: int) -> tuple[int, float | None]:
    """Both read the (sink, status, …) index only; the oldest row is the lowest id."""
    (count,) = conn.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM deliveries"
        " WHERE sink = ? AND status = 'pending' LIMIT ?)",
        (sink, cap),
    ).fetchone()
    row = conn.execute(
        "SELECT created_at FROM deliveries WHERE id = (SELECT MIN(id) FROM deliveries"
        " WHERE sink = ? AND status = 'pending')",
        (sink,),
    ).fetchone()
    return int(count), None if row is None else float(row[0])


def _ended_since(conn: Sql, since: float, cap: int) -> tuple[dict[tuple[str, str], int], bool]:
    """(sink, outcome) → delivered and dead attempts that started at `since` or later, read
    from the newest `cap` attempts at most (the bool: whether that covered all of them)."""
    (newest,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM attempts").fetchone()
    first = _first_attempt_ending_after(conn, since - _ATTEMPT_ORDER_SLACK_S, newest)
    window_start = max(first, newest - cap + 1)
    rows = conn.execute(
        "SELECT d.sink, a.outcome, COUNT(*) FROM attempts a"
        " JOIN deliveries d ON d.id = a.delivery_id"
        " WHERE a.id >= ? AND a.started_at >= ? AND a.outcome IN ('delivered', 'dead')"
        " GROUP BY d.sink, a.outcome",
        (window_start, since),
    ).fetchall()
    return {(r[0], r[1]): int(r[2]) for r in rows}, window_start == first


def _first_attempt_ending_after(conn: Sql, when: float, newest: int) -> int:
    """The lowest attempt id that ended at `when` or later (newest + 1: none did), by
    binary search over ids: about 20 index lookups for a million attempts, no scan."""
    low, high = 1, newest + 1
    sql = (
        "SELECT id, started_at + duration_ms / 1000.0 FROM attempts"
        " WHERE id >= ? ORDER BY id LIMIT 1"
    )
    while low < high:
        middle = (low + high) // 2
        row = conn.execute(sql, (middle,)).fetchone()
        if row is None or row[1] >= when:
            high = middle
        else:
            low = row[0] + 1
    return low


# -- retention and durable outputs ------------------------------------------------------------


def _delete_events(conn: Sql, ids: list[str], at_bound: str) -> tuple[int, int, int, int]:
    """Delete these events (those still old and without a pending delivery: a replay may have
    added one since they were chosen) with their attempts, mirror records and deliveries."""
    counts = [0, 0, 0, 0]
    for chunk in _chunks(ids):
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
    for chunk in _chunks(ids):
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
    for chunk in _chunks(rowids):
        marks = ",".join("?" * len(chunk))
        gone += conn.execute(
            f"DELETE FROM jobs WHERE rowid IN ({marks}) AND state != 'watching'"  # noqa: S608
            " AND updated_at < ?",
            (*chunk, older_than),
        ).rowcount
    return gone


def _incremental_vacuum(conn: Sql, pages: int) -> None:
    """Move up to `pages` free pages to the end of the file and cut them off. The statement
    frees one page per step, and only executescript steps it to the end (execute steps once)."""
    conn.executescript(f"PRAGMA incremental_vacuum({int(pages)});")


def _mirrors_of(conn: Sql, event_ids: list[str], sink: str) -> dict[str, list[MirroredOutput]]:
    found: dict[str, list[MirroredOutput]] = {}
    for chunk in _chunks(sorted(set(event_ids))):
        marks = ",".join("?" * len(chunk))
        for event_id, idx, bucket, key, content_type in conn.execute(
            "SELECT event_id, idx, bucket, object_key, content_type FROM mirrors"  # noqa: S608
            f" WHERE sink = ? AND event_id IN ({marks}) ORDER BY event_id, idx",
            (sink, *chunk),
        ):
            found.setdefault(event_id, []).append(
                MirroredOutput(int(idx), bucket, key, content_type)
            )
    return found
