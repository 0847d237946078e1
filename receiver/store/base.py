"""What the SQL backends do alike, written once: each role's reads and method shells, on a few
primitives a backend provides and its Dialect.

`SqlStore` declares the primitives: `_all` runs one read statement, `_dicts_together` several
at once (SQLite: one hop to the reader's thread; PostgreSQL: one pooled connection), both in
the backend's own placeholders. The role bases below implement what both backends do the same
way for one role Protocol of receiver.store.model each, and declare abstract the few steps
each backend does its own way (its writes, mostly). A backend's role modules subclass these
(receiver.store.sqlite.events, receiver.store.postgres.events, …), and its store composes them.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import Any, ClassVar

from receiver.store.model import (
    Due,
    EventFilter,
    Job,
    NewEvent,
    Pruned,
    ReplayScope,
    Stored,
    age_bound,
)
from receiver.store.rows import (
    Batch,
    Written,
    event_doc,
    event_with_deliveries,
    job_from_row,
    prepare,
    results,
    stored_json,
)
from receiver.store.sql import (
    ATTEMPTS_OF_EVENT_SQL,
    DELIVERIES_OF_EVENT_SQL,
    DELIVERY_COLUMNS,
    EVENT_SQL,
    JOB_COLUMNS,
    MIRRORS_SQL,
    PRUNE_CANDIDATES,
    Dialect,
)

Statement = tuple[str, Sequence[Any]]


class SqlStore(ABC):
    """The primitives every role base reads through."""

    SQL: ClassVar[Dialect]
    owner: str  # whose claims are ours
    lease_s: float  # how long a claim holds by default

    @abstractmethod
    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read statement."""

    @abstractmethod
    async def _dicts_together(self, statements: Sequence[Statement]) -> list[list[dict[str, Any]]]:
        """The rows (as column → value) of several read statements, run at once."""

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one shared read statement (written with `?`, see Dialect.marks)."""
        return await self._all(self.SQL.marks(sql), params)


class EventLogBase(SqlStore):
    """EventLog: writing a batch is the backend's; the reads are shared."""

    @abstractmethod
    async def _write_batch(self, batch: Batch) -> Written:
        """Store a prepared batch (rows.prepare) in ONE transaction."""

    async def write_events(self, items: Sequence[NewEvent]) -> list[Stored]:
        batch, positions = prepare(items, time.time())
        return results(batch, positions, await self._write_batch(batch))

    async def get_event(self, event_id: str) -> dict[str, Any] | None:
        found, deliveries, attempts, mirrors = await self._dicts_together(
            [
                (self.SQL.marks(sql), (event_id,))
                for sql in (EVENT_SQL, DELIVERIES_OF_EVENT_SQL, ATTEMPTS_OF_EVENT_SQL, MIRRORS_SQL)
            ]
        )
        if not found:
            return None
        event = event_doc(found[0]["event_json"], found[0]["raw_body"])
        return event_with_deliveries(event, deliveries, attempts, mirrors)

    async def list_events(
        self, where: EventFilter, before: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        sql, params = self.SQL.events_page(where, before, limit)
        return [stored_json(r[0]) for r in await self._query(sql, params)]

    async def count_events(self) -> int:
        [(count,)] = await self._query("SELECT COUNT(*) FROM events")
        return int(count)


class DeliveryQueueBase(SqlStore):
    """DeliveryQueue: taking and moving leases is the backend's; the rest of the shells and
    the listings are shared."""

    @abstractmethod
    async def _claim(
        self, sink: str, now: float, limit: int, until: float, waiting_for: str | None
    ) -> list[tuple[Any, ...]]:
        """Lease up to `limit` due rows of `sink` to this owner until `until`, as claim_due
        says: (id, attempts, event_json, raw_body) each."""

    @abstractmethod
    async def _move_leases(self, delivery_ids: Sequence[int], until: float | None) -> int:
        """Move the lease end of this owner's rows among `delivery_ids` (None: give them
        back); rows another owner holds now are left alone. Returns how many moved."""

    @abstractmethod
    async def _pending_sinks(self) -> list[str]:
        """The sinks that have pending deliveries, found without reading every row (a loose
        scan of an index that leads with the sink)."""

    @abstractmethod
    async def _dead_letter(self, sinks: Sequence[str], limit: int, now: float) -> dict[str, int]:
        """Make up to `limit` pending rows of `sinks` dead as dead_letter_removed_sinks says,
        in ONE transaction; sink → rows made dead."""

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
        rows = await self._claim(sink, now, limit, until, waiting_for)
        return [Due(r[0], sink, r[1], event_doc(r[2], r[3]), until) for r in rows]

    async def renew(self, delivery_ids: Sequence[int], until: float) -> int:
        return await self._move_leases(delivery_ids, until)

    async def release(self, delivery_ids: Sequence[int]) -> None:
        await self._move_leases(delivery_ids, None)

    async def dead_letter_removed_sinks(
        self, configured: Collection[str], limit: int, now: float
    ) -> dict[str, int]:
        keep = set(configured)
        removed = [sink for sink in await self._pending_sinks() if sink not in keep]
        return await self._dead_letter(removed, limit, now) if removed and limit > 0 else {}

    async def list_deliveries(
        self,
        status: str | None = None,
        sink: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        sql, params = self.SQL.page(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries",  # noqa: S608
            self.SQL.equals("", status=status, sink=sink),
            None if after is None else ("id > ?", [after]),
            "id",
            limit,
        )
        [rows] = await self._dicts_together([(self.SQL.marks(sql), params)])
        return rows

    async def delivery_counts(self) -> dict[tuple[str, str], int]:
        rows = await self._query(
            "SELECT sink, status, COUNT(*) FROM deliveries GROUP BY sink, status"
        )
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def pending_stats(self) -> tuple[int, float | None]:
        [(count, oldest)] = await self._query(
            "SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE status = 'pending'"
        )
        return int(count), None if oldest is None else float(oldest)


class JobTableBase(SqlStore):
    """JobTable: the reads; writing jobs is the backend's."""

    async def due_jobs(self, now: float, limit: int, exclude: set[tuple[str, str]]) -> list[Job]:
        rows = await self._query(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'watching' AND next_poll_at <= ?"  # noqa: S608
            " ORDER BY next_poll_at LIMIT ?",
            (now, limit + len(exclude)),
        )
        jobs = [job_from_row(r) for r in rows]
        return [j for j in jobs if (j.source, j.job_id) not in exclude][:limit]

    async def next_job_due_at(self) -> float | None:
        [(at,)] = await self._query("SELECT MIN(next_poll_at) FROM jobs WHERE state = 'watching'")
        return None if at is None else float(at)

    async def get_job(self, source: str, job_id: str) -> Job | None:
        rows = await self._query(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE source = ? AND job_id = ?",  # noqa: S608
            (source, self.SQL.text(job_id)),
        )
        return job_from_row(rows[0]) if rows else None

    async def list_jobs(
        self,
        source: str | None = None,
        state: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[Job]:
        sql, params = self.SQL.page(
            f"SELECT {JOB_COLUMNS} FROM jobs",  # noqa: S608
            self.SQL.equals("", source=source, state=state),
            None if after is None else self.SQL.pair_after(("source", "job_id"), after),
            "source, job_id",
            limit,
        )
        return [job_from_row(r) for r in await self._query(sql, params)]

    async def count_jobs(self, state: str) -> int:
        [(count,)] = await self._query("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,))
        return int(count)


class ReplayLogBase(SqlStore):
    """ReplayLog: planning reads; adding the rows is the backend's."""

    async def replay_horizon(self) -> tuple[int, int]:
        [(events, deliveries)] = await self._query(
            f"SELECT (SELECT COALESCE(MAX({self.SQL.sequence}), 0) FROM events),"  # noqa: S608
            " (SELECT COALESCE(MAX(id), 0) FROM deliveries)"
        )
        return int(events), int(deliveries)

    async def event_kinds(self, where: EventFilter, upto: int) -> dict[tuple[str, str], int]:
        clauses, params = self.SQL.event_where(where, "events")
        sql = (
            f"SELECT source, type, COUNT(*) FROM events WHERE {' AND '.join(clauses)}"  # noqa: S608
            f" AND {self.SQL.sequence} <= ? GROUP BY source, type"
        )
        rows = await self._query(sql, (*params, upto))
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def count_latest(self, scope: ReplayScope) -> tuple[int, int]:
        where, params = self.SQL.latest_where(scope)
        sql = (
            "SELECT COUNT(DISTINCT d.event_id), COUNT(*) FROM deliveries d"  # noqa: S608
            f" JOIN events e ON e.id = d.event_id WHERE {where}"
        )
        [(events, deliveries)] = await self._query(sql, params)
        return int(events), int(deliveries)


class RetentionBase(SqlStore):
    """Retention: choosing a batch is shared; counting and deleting it are the backend's."""

    @abstractmethod
    async def _count_event_rows(self, ids: list[str]) -> tuple[int, int, int, int]:
        """What _delete_events would remove (a dry run): (events, deliveries, attempts,
        mirror records)."""

    @abstractmethod
    async def _delete_events(self, ids: list[str], at_bound: str) -> tuple[int, int, int, int]:
        """Delete these events (those still received before `at_bound` and without a pending
        delivery: a replay may have added one since they were chosen) with their deliveries,
        attempts and mirror records, in ONE transaction; (events, deliveries, attempts,
        mirror records) removed."""

    async def prune(
        self, older_than: float, after: str | None, limit: int, *, dry_run: bool = False
    ) -> Pruned:
        # Batched deletes (not partitions: dedupe needs idempotency_key unique across all
        # events, which a partitioned table cannot enforce; bench/RESULTS.md has numbers).
        # The batch is chosen by a read, so a writer is held only for the deletes (and not at
        # all when nothing goes); _delete_events checks the conditions again.
        id_bound, at_bound = age_bound(older_than)
        rows = await self._query(PRUNE_CANDIDATES, (at_bound, after or "", id_bound, limit))
        position = rows[-1][0] if len(rows) == limit else None
        ids = [r[0] for r in rows if r[1]]
        if not ids:
            return Pruned(after=position)
        if dry_run:
            counts = await self._count_event_rows(ids)
        else:
            counts = await self._delete_events(ids, at_bound)
        return Pruned(*counts, after=position)
