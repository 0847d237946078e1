"""The PostgreSQL event log (EventLog): writing a batch of events with their deliveries in a
few set-based statements, deduplicated, and the latest delivery states of a page of events.
The reads both backends share are receiver.store.base.EventLogBase's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from receiver.core.events import TERMINAL_STATUSES
from receiver.store.base import EventLogBase
from receiver.store.postgres.base import Conn, PostgresBase, columns, storable_row, storable_text
from receiver.store.rows import Batch, Written, delivery_counts, with_job_metadata
from receiver.store.sql import EVENT_COLUMNS


class PostgresEvents(EventLogBase, PostgresBase):
    async def _write_batch(self, batch: Batch) -> Written:
        async with self._transaction(notify=bool(batch.deliveries)) as conn:
            return await _insert_batch(conn, batch)

    async def latest_statuses(self, event_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        rows = await self._all(
            "SELECT DISTINCT ON (event_id, sink) event_id, sink, status FROM deliveries"
            " WHERE event_id = ANY(%s) ORDER BY event_id, sink, id DESC",
            (sorted(set(event_ids)),),
        )
        found: dict[str, dict[str, str]] = {}
        for event_id, sink, status in rows:
            found.setdefault(event_id, {})[sink] = status
        return found


async def _insert_batch(conn: Conn, batch: Batch) -> Written:
    """A few statements whatever the batch size: the late-status check, one INSERT of every
    event, one of every delivery, and (only if some keys existed) one lookup of their ids.

    Rows go in idempotency-key order so that two transactions inserting overlapping batches
    wait for each other's keys in the same order instead of deadlocking. A concurrent insert
    of the same key waits for the other transaction, then conflicts, and reads its id."""
    suppressed = batch.suppressed | await _finished_elsewhere(conn, batch.maybe_late)
    if batch.jobs:
        sources, job_ids = columns([(s, storable_text(j)) for s, j in batch.jobs], 2)
        cur = await conn.execute(
            "SELECT j.source, j.job_id, j.metadata_json FROM jobs j"
            " JOIN unnest(%s::text[], %s::text[]) AS k(source, job_id)"
            " ON j.source = k.source AND j.job_id = k.job_id",
            (sources, job_ids),
        )
        by_text = {(r[0], r[1]): r[2] for r in await cur.fetchall()}
        found = {key: by_text[(key[0], storable_text(key[1]))] for key in batch.jobs
                 if (key[0], storable_text(key[1])) in by_text}
        with_job_metadata(batch, found)
        # Only jobs that have a row can end (a round trip saved for unwatched jobs).
        ends = sorted((key, state) for key, state in batch.finished_jobs.items() if key in found)
        if ends:
            done_sources, done_ids, states = columns(
                [(s, storable_text(j), state) for (s, j), state in ends], 3
            )
            await conn.execute(
                "UPDATE jobs j SET state = k.state, updated_at = %s"
                " FROM unnest(%s::text[], %s::text[], %s::text[]) AS k(source, job_id, state)"
                " WHERE j.source = k.source AND j.job_id = k.job_id AND j.state = 'watching'",
                (time.time(), done_sources, done_ids, states),
            )
    rows = sorted((storable_row(row) for row in batch.event_rows), key=lambda r: r[1])
    cur = await conn.execute(
        f"INSERT INTO events ({EVENT_COLUMNS}) SELECT * FROM unnest("  # noqa: S608
        "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
        " %s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[])"
        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        columns(rows, 12),
    )
    inserted = {r[0] for r in await cur.fetchall()}
    deliveries = [d for d in batch.deliveries if d[0] in inserted and d[0] not in suppressed]
    if deliveries:
        now = deliveries[0][3]
        event_ids, sinks = columns([(d[0], d[1]) for d in deliveries], 2)
        await conn.execute(
            "INSERT INTO deliveries (event_id, sink, status, next_attempt_at, created_at,"
            " updated_at) SELECT e, s, 'pending', %s, %s, %s"
            " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS d(e, s, n) ORDER BY n",
            (now, now, now, event_ids, sinks),
        )
    missing = [
        storable_text(k) for k, i in zip(batch.keys, batch.ids, strict=True) if i not in inserted
    ]
    existing: dict[str, str] = {}
    if missing:
        cur = await conn.execute(
            "SELECT idempotency_key, id FROM events WHERE idempotency_key = ANY(%s)", (missing,)
        )
        by_key = {r[0]: r[1] for r in await cur.fetchall()}
        existing = {k: by_key[storable_text(k)] for k in batch.keys if storable_text(k) in by_key}
    return Written(inserted, existing, delivery_counts(deliveries))


async def _finished_elsewhere(conn: Conn, jobs: dict[str, tuple[str, str]]) -> set[str]:
    """The ids (keys of `jobs`) whose job already has a terminal event in the log."""
    if not jobs:
        return set()
    sources, job_ids = columns([(s, storable_text(j)) for s, j in set(jobs.values())], 2)
    cur = await conn.execute(
        "SELECT DISTINCT e.source, e.job_id FROM events e"
        " JOIN unnest(%s::text[], %s::text[]) AS k(source, job_id)"
        " ON e.source = k.source AND e.job_id = k.job_id WHERE e.status = ANY(%s)",
        (sources, job_ids, sorted(TERMINAL_STATUSES)),
    )
    finished = {(r[0], r[1]) for r in await cur.fetchall()}
    return {i for i, (s, j) in jobs.items() if (s, storable_text(j)) in finished}
