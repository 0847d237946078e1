"""The SQLite store: one file, WAL, a writer connection and a reader connection.

Durability: `synchronous = FULL` in WAL mode fsyncs the log at every commit, so an event whose
200 went out survives a killed process and a lost machine alike. Commits are shared by batches
(see receiver.pipeline), which is what keeps that affordable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from receiver.events import TERMINAL_STATUSES
from receiver.store import Due, NewEvent, Outcome, Stored

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
)
SCHEMA_VERSION = len(MIGRATIONS)
_CHUNK = 500  # bound on parameters per IN (…) list


class SchemaTooNew(RuntimeError):
    pass


class SqliteStore:
    """Store on one SQLite file."""

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        # One process owns a SQLite file, so claims live in memory: a crash forgets them and
        # every pending row is sent again after the restart (at-least-once).
        self._claimed: set[int] = set()
        self._write_lock = asyncio.Lock()  # transactions on the writer must not interleave

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        parent = Path(self.path).parent
        parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        try:
            await self._writer.execute("PRAGMA journal_mode = WAL")
            await self._migrate(self._writer)
            self._reader = await self._connect()
        except BaseException:
            await self.close()
            raise

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
        return db

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute("SELECT MAX(version) FROM schema_version") as cur:
                row = await cur.fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"{self.path} has schema version {current}, newer than this hookyard "
                    f"understands ({SCHEMA_VERSION}); upgrade hookyard"
                )
            for version in range(current, SCHEMA_VERSION):
                for statement in MIGRATIONS[version]:
                    await db.execute(statement)
                await db.execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        for db in (self._reader, self._writer):
            if db is not None:
                await db.close()
        self._reader = self._writer = None

    @property
    def writer(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise RuntimeError("store is not open")
        return self._writer

    @property
    def reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("store is not open")
        return self._reader

    async def ping(self) -> None:
        async with self.reader.execute("SELECT 1") as cur:
            await cur.fetchone()

    # -- writing ---------------------------------------------------------------------------

    async def write_events(self, items: Sequence[NewEvent]) -> list[Stored]:
        async with self._transaction() as db:
            return await self._write(db, items)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            db = self.writer
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise

    async def _write(self, db: aiosqlite.Connection, items: Sequence[NewEvent]) -> list[Stored]:
        known = await self._ids_by_key(db, [i.event.idempotency_key for i in items])
        finished = await self._finished_jobs(db, items)
        now = time.time()
        event_rows: list[tuple[Any, ...]] = []
        delivery_rows: list[tuple[Any, ...]] = []
        results: list[Stored] = []
        for item in items:
            ev = item.event
            if ev.idempotency_key in known:
                results.append(Stored(known[ev.idempotency_key], True, 0))
                continue
            known[ev.idempotency_key] = ev.id
            job = (ev.source, ev.job_id)
            # A late non-terminal status (processing after completed) is history, not news.
            sinks = () if (not ev.is_terminal and job in finished) else item.sinks
            if ev.is_terminal:
                finished.add(job)
            event_rows.append(_event_row(item))
            delivery_rows.extend((ev.id, sink, "pending", now, now, now) for sink in sinks)
            results.append(Stored(ev.id, False, len(sinks)))
        await db.executemany(
            "INSERT INTO events (id, idempotency_key, type, source, provider, job_id, status, via,"
            " received_at, event_json, raw_body, headers_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            event_rows,
        )
        await db.executemany(
            "INSERT INTO deliveries (event_id, sink, status, next_attempt_at, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            delivery_rows,
        )
        return results

    async def _ids_by_key(self, db: aiosqlite.Connection, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in _chunks(sorted(set(keys))):
            marks = ",".join("?" * len(chunk))  # placeholders only: no value enters the SQL
            sql = f"SELECT idempotency_key, id FROM events WHERE idempotency_key IN ({marks})"  # noqa: S608
            async with db.execute(sql, chunk) as cur:
                found.update({row[0]: row[1] async for row in cur})
        return found

    async def _finished_jobs(
        self, db: aiosqlite.Connection, items: Sequence[NewEvent]
    ) -> set[tuple[str, str | None]]:
        """(source, job_id) of the non-terminal items whose job already has a terminal event."""
        jobs = sorted(
            {
                (i.event.source, i.event.job_id)
                for i in items
                if i.event.job_id is not None and not i.event.is_terminal
            }
        )
        finished: set[tuple[str, str | None]] = set()
        terminal = sorted(TERMINAL_STATUSES)
        for source, job_id in jobs:
            sql = (
                "SELECT 1 FROM events WHERE source = ? AND job_id = ? AND status IN (?, ?, ?)"
                " LIMIT 1"
            )
            async with db.execute(sql, (source, job_id, *terminal)) as cur:
                if await cur.fetchone() is not None:
                    finished.add((source, job_id))
        return finished

    # -- delivering ------------------------------------------------------------------------

    async def claim_due(self, sink: str, now: float, limit: int) -> list[Due]:
        sql = (
            "SELECT d.id, d.attempts, e.event_json, e.raw_body FROM deliveries d"
            " JOIN events e ON e.id = d.event_id"
            " WHERE d.sink = ? AND d.status = 'pending' AND d.next_attempt_at <= ?"
            " ORDER BY d.next_attempt_at, d.id LIMIT ?"
        )
        # Rows held when the query starts are skipped even if released meanwhile: the query
        # may have read them from before their outcome was committed.
        held = set(self._claimed)
        async with self.reader.execute(sql, (sink, now, limit + len(held))) as cur:
            rows = [r async for r in cur if r[0] not in held and r[0] not in self._claimed]
        rows = rows[:limit]
        self._claimed.update(r[0] for r in rows)
        return [Due(r[0], sink, r[1], _event_doc(r[2], r[3])) for r in rows]

    async def next_due_at(self, sink: str) -> float | None:
        sql = (
            "SELECT id, next_attempt_at FROM deliveries WHERE sink = ? AND status = 'pending'"
            " ORDER BY next_attempt_at LIMIT ?"
        )
        async with self.reader.execute(sql, (sink, len(self._claimed) + 1)) as cur:
            async for row in cur:
                if row[0] not in self._claimed:
                    return float(row[1])
        return None

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        async with self._transaction() as db:
            await db.executemany(
                "INSERT INTO attempts (delivery_id, started_at, duration_ms, status_code, error,"
                " outcome) VALUES (?, ?, ?, ?, ?, ?)",
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
            await db.executemany(
                "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?,"
                " last_status_code = ?, last_error = ?, updated_at = ? WHERE id = ?",
                [
                    (
                        o.status,
                        o.attempts,
                        o.next_attempt_at,
                        o.status_code,
                        o.error,
                        o.started_at + o.duration_s,
                        o.delivery_id,
                    )
                    for o in outcomes
                ],
            )
        self.release([o.delivery_id for o in outcomes])

    def release(self, delivery_ids: Sequence[int]) -> None:
        self._claimed.difference_update(delivery_ids)

    async def delivery_counts(self) -> dict[tuple[str, str], int]:
        sql = "SELECT sink, status, COUNT(*) FROM deliveries GROUP BY sink, status"
        async with self.reader.execute(sql) as cur:
            return {(r[0], r[1]): int(r[2]) async for r in cur}

    # -- reading ---------------------------------------------------------------------------

    async def count_events(self) -> int:
        async with self.reader.execute("SELECT COUNT(*) FROM events") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def get_event(self, event_id: str) -> dict[str, Any] | None:
        sql = "SELECT event_json, raw_body FROM events WHERE id = ?"
        async with self.reader.execute(sql, (event_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        event = _event_doc(row[0], row[1])
        sql = (
            "SELECT id, sink, status, attempts, next_attempt_at, last_status_code, last_error"
            " FROM deliveries WHERE event_id = ? ORDER BY id"
        )
        event["deliveries"] = await self._dicts(sql, (event_id,))
        sql = (
            "SELECT a.delivery_id, a.started_at, a.duration_ms, a.status_code, a.error, a.outcome"
            " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " WHERE d.event_id = ? ORDER BY a.id"
        )
        attempts = await self._dicts(sql, (event_id,))
        for delivery in event["deliveries"]:
            delivery["attempt_log"] = [
                {k: v for k, v in a.items() if k != "delivery_id"}
                for a in attempts
                if a["delivery_id"] == delivery["id"]
            ]
        return event

    async def _dicts(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        async with self.reader.execute(sql, params) as cur:
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) async for r in cur]


def _event_row(item: NewEvent) -> tuple[Any, ...]:
    ev = item.event
    doc = ev.to_json()
    del doc["raw"]  # kept once, as the exact bytes received
    return (
        ev.id,
        ev.idempotency_key,
        ev.type,
        ev.source,
        ev.provider,
        ev.job_id,
        ev.status,
        ev.via,
        ev.received_at,
        json.dumps(doc, separators=(",", ":")),
        item.raw_body,
        json.dumps(dict(item.headers), separators=(",", ":")),
    )


def _event_doc(event_json: str, raw_body: bytes) -> dict[str, Any]:
    """The normalized event as sinks and the API see it: the stored JSON plus `raw`."""
    event: dict[str, Any] = json.loads(event_json)
    event["raw"] = _decode_raw(raw_body)
    return event


def _decode_raw(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
