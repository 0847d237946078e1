"""The SQLite event log (EventLog): writing a batch of events with their deliveries in one
transaction, deduplicated, and the latest delivery states of a page of events. The reads
both backends share are receiver.store.base.EventLogBase's.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from receiver.core.events import TERMINAL_STATUSES
from receiver.store.base import EventLogBase
from receiver.store.model import NewEvent, Stored
from receiver.store.rows import (
    Batch,
    Written,
    delivery_counts,
    from_plain,
    plain_item,
    prepare,
    results,
    with_job_metadata,
)
from receiver.store.sql import EVENT_COLUMNS
from receiver.store.sqlite.base import SqliteBase
from receiver.store.sqlite.connection import CHUNK, SQL, Sql, chunks, job_chunks
from receiver.store.sqlite.jobs import end_jobs, job_metadata
from receiver.store.sqlite.schema import unusable
from receiver.store.sqlite.writer import WriterProcess


class SqliteEvents(EventLogBase, SqliteBase):
    _writer_process: WriterProcess | None = None

    async def open(self) -> None:
        await super().open()
        if self.writer_process:
            self._writer_process = WriterProcess(self.path, self.busy_timeout_ms, write_items)
            try:
                await self._writer_process.start()
            except BaseException as exc:
                await self.close()
                if isinstance(exc, sqlite3.Error | OSError):
                    raise unusable(self.path, exc, self.busy_timeout_ms) from None
                raise

    async def close(self) -> None:
        if self._writer_process is not None:
            await self._writer_process.stop()
            self._writer_process = None
        await super().close()

    async def write_events(self, items: Sequence[NewEvent]) -> list[Stored]:
        if self._writer_process is None:
            return await super().write_events(items)
        # The child prepares the rows too (write_items): the web process only hands over plain
        # values, and its loop is what limits how many webhooks a second `serve` takes.
        answers = await self._writer_process.write([plain_item(item) for item in items])
        return [Stored(*answer) for answer in answers]

    async def _write_batch(self, batch: Batch) -> Written:
        return await self._write(write_batch, batch)

    async def latest_statuses(self, event_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        return await self._read(_latest_statuses, list(event_ids))


def write_items(conn: Sql, items: list[tuple[Any, ...]]) -> list[tuple[str, bool, int]]:
    """The writer process's batch (rows.plain_item each), inside the transaction: prepared,
    written, and answered as (event id, duplicate, deliveries) per item, in order."""
    batch, positions = prepare([from_plain(values) for values in items], time.time())
    written = results(batch, positions, write_batch(conn, batch))
    return [(s.event_id, s.duplicate, s.deliveries) for s in written]


def write_batch(conn: Sql, batch: Batch) -> Written:
    """Runs on the database thread, inside the transaction."""
    suppressed = batch.suppressed | _finished_elsewhere(conn, batch.maybe_late)
    if batch.jobs:
        found = job_metadata(conn, list(batch.jobs))
        with_job_metadata(batch, {key: metadata for key, (metadata, _) in found.items()})
        end_jobs(conn, batch.finished_jobs, found, time.time())
    before = conn.total_changes
    for sql, params in _multi_row(
        f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ",  # noqa: S608
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
    missing = [k for k, i in zip(batch.keys, batch.ids, strict=True) if i not in inserted]
    existing = _ids_by_key(conn, missing) if missing else {}
    return Written(inserted, existing, delivery_counts(rows))


def _multi_row(
    head: str, rows: list[tuple[Any, ...]], tail: str = ""
) -> Iterable[tuple[str, list[Any]]]:
    """One statement per chunk of rows (multi-row VALUES) instead of one step per row."""
    if not rows:
        return
    marks = "(" + ",".join("?" * len(rows[0])) + ")"
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        yield head + ",".join([marks] * len(chunk)) + tail, [v for row in chunk for v in row]


def events_where_in(conn: Sql, select: str, column: str, values: list[str]) -> list[Any]:
    """`SELECT {select} FROM events WHERE {column} IN (values)`, in chunks under SQLite's
    parameter limit; only placeholders carry values."""
    rows: list[Any] = []
    for chunk in chunks(sorted(set(values))):
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT {select} FROM events WHERE {column} IN ({marks})"  # noqa: S608
        rows.extend(conn.execute(sql, chunk).fetchall())
    return rows


def _existing_ids(conn: Sql, ids: list[str]) -> set[str]:
    return {row[0] for row in events_where_in(conn, "id", "id", ids)}


def _ids_by_key(conn: Sql, keys: list[str]) -> dict[str, str]:
    return dict(events_where_in(conn, "idempotency_key, id", "idempotency_key", keys))


def _finished_elsewhere(conn: Sql, jobs: dict[str, tuple[str, str]]) -> set[str]:
    """The ids (keys of `jobs`) whose job already has a terminal event in the log: a statement
    per source, not one per event (each step waits for the GIL, see jobs.end_jobs)."""
    terminal = sorted(TERMINAL_STATUSES)
    done: set[tuple[str, str]] = set()
    for source, job_ids, marks in job_chunks(jobs.values()):
        access, access_params = SQL.job_access("events", source, job_ids)
        sql = (
            "SELECT DISTINCT job_id FROM events"  # noqa: S608
            f" WHERE +source = ? AND +job_id IN ({marks}) AND status IN (?, ?, ?) AND {access}"
        )
        found = conn.execute(sql, [source, *job_ids, *terminal, *access_params])
        done.update((source, job_id) for (job_id,) in found)
    return {event_id for event_id, job in jobs.items() if job in done}


def _latest_statuses(conn: Sql, event_ids: list[str]) -> dict[str, dict[str, str]]:
    """Rows come by id, so a later delivery of the same (event, sink) overwrites an earlier."""
    found: dict[str, dict[str, str]] = {}
    for chunk in chunks(sorted(set(event_ids))):
        marks = ",".join("?" * len(chunk))
        sql = (
            "SELECT event_id, sink, status FROM deliveries"  # noqa: S608
            f" WHERE event_id IN ({marks}) ORDER BY id"
        )
        for event_id, sink, status in conn.execute(sql, chunk):
            found.setdefault(event_id, {})[sink] = status
    return found
