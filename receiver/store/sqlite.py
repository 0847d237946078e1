"""The SQLite store: one file, WAL, a writer connection and a reader connection.

Durability: `synchronous = FULL` in WAL mode fsyncs the log at every commit, so an event whose
200 went out survives a killed process and a lost machine alike. Commits are shared by batches
(see receiver.pipeline), which is what keeps that affordable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from receiver.events import TERMINAL_STATUSES
from receiver.store import NewEvent, Stored

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
        db = self.writer
        await db.execute("BEGIN IMMEDIATE")
        try:
            results = await self._write(db, items)
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        return results

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
        event: dict[str, Any] = json.loads(row[0])
        event["raw"] = _decode_raw(row[1])
        sql = (
            "SELECT id, sink, status, attempts, next_attempt_at, last_status_code, last_error"
            " FROM deliveries WHERE event_id = ? ORDER BY id"
        )
        async with self.reader.execute(sql, (event_id,)) as cur:
            cols = [c[0] for c in cur.description]
            event["deliveries"] = [dict(zip(cols, r, strict=True)) async for r in cur]
        return event


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


def _decode_raw(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
