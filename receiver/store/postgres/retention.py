"""PostgreSQL retention (Retention): deleting a chosen batch of old events with everything
that hangs off them, and ended jobs. Choosing the batch is receiver.store.base.RetentionBase's.
"""

from __future__ import annotations

from receiver.store.base import RetentionBase
from receiver.store.postgres.base import Conn, PostgresBase


class PostgresRetention(RetentionBase, PostgresBase):
    async def _count_event_rows(self, ids: list[str]) -> tuple[int, int, int, int]:
        [(deliveries, attempts, mirrors)] = await self._all(
            "SELECT (SELECT COUNT(*) FROM deliveries WHERE event_id = ANY(%s)),"
            " (SELECT COUNT(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " WHERE d.event_id = ANY(%s)),"
            " (SELECT COUNT(*) FROM mirrors WHERE event_id = ANY(%s))",
            (ids, ids, ids),
        )
        return len(ids), int(deliveries), int(attempts), int(mirrors)

    async def _delete_events(self, ids: list[str], at_bound: str) -> tuple[int, int, int, int]:
        async with self._transaction() as conn:
            return await _delete_events(conn, ids, at_bound)

    async def prune_jobs(self, older_than: float, limit: int, *, dry_run: bool = False) -> int:
        select = (
            "SELECT source, job_id FROM jobs WHERE state <> 'watching' AND updated_at < %s"
            " LIMIT %s"
        )
        if dry_run:  # every one: nothing goes, so a batch could not move on to the next
            [(count,)] = await self._all(
                "SELECT COUNT(*) FROM jobs WHERE state <> 'watching' AND updated_at < %s",
                (older_than,),
            )
            return int(count)
        rows = await self._all(
            f"DELETE FROM jobs WHERE (source, job_id) IN ({select} FOR UPDATE SKIP LOCKED)"  # noqa: S608
            " RETURNING 1",
            (older_than, limit),
        )
        return len(rows)

    async def reclaim_space(self) -> None:
        """Nothing to do: autovacuum makes the deleted rows' space reusable; giving it back to
        the OS would need VACUUM FULL, which locks the tables (README, Retention)."""

    async def database_size(self) -> int:
        [(size,)] = await self._all("SELECT pg_database_size(current_database())")
        return int(size)


async def _delete_events(conn: Conn, ids: list[str], at_bound: str) -> tuple[int, int, int, int]:
    """Delete these events (those still old and without a pending delivery: a replay may have
    added one since they were chosen; rows are locked so one cannot be added meanwhile) with
    their attempts, mirror records and deliveries."""
    cur = await conn.execute(
        "SELECT id FROM events e WHERE id = ANY(%s) AND received_at < %s"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id"
        " AND d.status = 'pending') ORDER BY id FOR UPDATE SKIP LOCKED",
        (ids, at_bound),
    )
    gone = [r[0] for r in await cur.fetchall()]
    if not gone:
        return 0, 0, 0, 0
    counts = []
    for sql in (
        "DELETE FROM attempts WHERE delivery_id IN"
        " (SELECT id FROM deliveries WHERE event_id = ANY(%s))",
        "DELETE FROM mirrors WHERE event_id = ANY(%s)",
        "DELETE FROM deliveries WHERE event_id = ANY(%s)",
        "DELETE FROM events WHERE id = ANY(%s)",
    ):
        cur = await conn.execute(sql, (gone,))
        counts.append(cur.rowcount)
    attempts, mirrors, deliveries, events = counts
    return events, deliveries, attempts, mirrors
