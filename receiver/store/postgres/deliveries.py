"""The PostgreSQL delivery queue (DeliveryQueue): leasing due rows (FOR UPDATE SKIP LOCKED),
settling them with their attempts and mirror records, moving leases, retrying a row, and
each sink's health. The shells and listings both backends share are
receiver.store.base.DeliveryQueueBase's.

Claims are leases in rows: `_claim` stamps rows with this store's owner id and a lease end,
other stores skip rows under a live lease, and `record_outcomes` changes only rows this owner
still holds. A process that dies keeps its rows until their leases end; then anyone takes them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

from psycopg.rows import dict_row

from receiver.core.outputs import MirroredOutput
from receiver.store.base import DeliveryQueueBase
from receiver.store.model import Outcome, SinkStats, removed_sink_error
from receiver.store.postgres.base import PostgresBase, columns, storable_row, storable_text
from receiver.store.rows import attempt_rows, mirror_rows, settled_rows
from receiver.store.sql import DELIVERY_COLUMNS


class PostgresDeliveries(DeliveryQueueBase, PostgresBase):
    async def _claim(
        self, sink: str, now: float, limit: int, until: float, waiting_for: str | None
    ) -> list[tuple[Any, ...]]:
        if limit <= 0:
            return []
        # The rows are picked in a CTE of their own: a CTE that locks rows runs exactly once,
        # so the LIMIT holds however the planner joins (an IN (subquery) may be re-run).
        return await self._all(
            "WITH picked AS ("  # noqa: S608
            " SELECT d.id FROM deliveries d WHERE d.sink = %s AND d.status = 'pending'"
            " AND d.next_attempt_at <= %s AND (d.lease_until IS NULL OR d.lease_until < %s)"
            f"{_settled(waiting_for)}"
            " ORDER BY d.next_attempt_at, d.id LIMIT %s FOR UPDATE OF d SKIP LOCKED),"
            " claimed AS ("
            " UPDATE deliveries d SET claimed_by = %s, lease_until = %s FROM picked"
            " WHERE d.id = picked.id RETURNING d.id, d.attempts, d.event_id, d.next_attempt_at)"
            " SELECT c.id, c.attempts, e.event_json, e.raw_body FROM claimed c"
            " JOIN events e ON e.id = c.event_id ORDER BY c.next_attempt_at, c.id",
            (sink, now, now, *_waiting(waiting_for), limit, self.owner, until),
        )

    async def next_due_at(self, sink: str, *, waiting_for: str | None = None) -> float | None:
        # A row under a live lease is due when its lease ends (its owner may have died), not
        # before: so a dead worker's rows wake the runner then.
        [(at,)] = await self._all(
            "SELECT MIN(CASE WHEN d.lease_until IS NOT NULL AND d.lease_until >= %s"  # noqa: S608
            " THEN GREATEST(d.next_attempt_at, d.lease_until) ELSE d.next_attempt_at END)"
            f" FROM deliveries d WHERE d.sink = %s AND d.status = 'pending'"
            f"{_settled(waiting_for)}",
            (time.time(), sink, *_waiting(waiting_for)),
        )
        return None if at is None else float(at)

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Attempts are logged as they happened; the row changes only while this store still
        holds its claim, so an owner whose lease ended cannot overwrite the new owner's state."""
        if not outcomes:
            return
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO attempts (delivery_id, started_at, duration_ms, status_code, error,"
                " outcome) SELECT * FROM unnest(%s::bigint[], %s::float8[], %s::float8[],"
                " %s::int[], %s::text[], %s::text[])",
                columns([storable_row(row) for row in attempt_rows(outcomes)], 6),
            )
            await conn.execute(
                "UPDATE deliveries d SET status = o.status, attempts = o.attempts,"
                " next_attempt_at = o.next_at, last_status_code = o.code, last_error = o.error,"
                " updated_at = o.updated_at, claimed_by = NULL, lease_until = NULL"
                " FROM unnest(%s::text[], %s::int[], %s::float8[], %s::int[], %s::text[],"
                " %s::float8[], %s::bigint[]) AS o(status, attempts, next_at, code, error,"
                " updated_at, id) WHERE d.id = o.id AND d.claimed_by = %s",
                (*columns([storable_row(row) for row in settled_rows(outcomes)], 7), self.owner),
            )
            mirrors = mirror_rows(outcomes)
            if mirrors:
                await conn.execute(
                    "INSERT INTO mirrors (event_id, sink, idx, bucket, object_key, content_type,"
                    " mirrored_at) SELECT d.event_id, m.sink, m.idx, m.bucket, m.key, m.type,"
                    " m.at FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[],"
                    " %s::text[], %s::float8[], %s::bigint[])"
                    " AS m(sink, idx, bucket, key, type, at, delivery_id)"
                    " JOIN deliveries d ON d.id = m.delivery_id"
                    " ON CONFLICT (event_id, sink, idx) DO UPDATE SET bucket = excluded.bucket,"
                    " object_key = excluded.object_key, content_type = excluded.content_type,"
                    " mirrored_at = excluded.mirrored_at",
                    columns([storable_row(row) for row in mirrors], 7),
                )

    async def _move_leases(self, delivery_ids: Sequence[int], until: float | None) -> int:
        if not delivery_ids:
            return 0
        async with self._transaction(notify=until is None) as conn:
            cur = await conn.execute(
                "UPDATE deliveries SET claimed_by = %s, lease_until = %s"
                " WHERE id = ANY(%s) AND claimed_by = %s AND status = 'pending'",
                (self.owner if until is not None else None, until, list(delivery_ids),
                 self.owner),
            )
            return cur.rowcount

    async def retry_delivery(self, delivery_id: int, now: float) -> tuple[dict[str, Any], bool]:
        select = f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = %s"  # noqa: S608
        async with self._transaction(notify=True) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(select + " FOR UPDATE", (delivery_id,))
            found = await cur.fetchone()
            if found is None:
                raise KeyError(delivery_id)
            if found["status"] == "pending":
                return found, False
            await cur.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = %s, updated_at = %s"  # noqa: S608
                f" WHERE id = %s RETURNING {DELIVERY_COLUMNS}",
                (now, now, delivery_id),
            )
            return cast(dict[str, Any], await cur.fetchone()), True

    async def _pending_sinks(self) -> list[str]:
        # Each step jumps to the next sink name in the partial index of pending rows
        # (deliveries_due): a few index lookups per sink, however big the backlog.
        rows = await self._all(
            "WITH RECURSIVE s(sink) AS ("
            " SELECT MIN(sink) FROM deliveries WHERE status = 'pending' UNION ALL"
            " SELECT (SELECT MIN(d.sink) FROM deliveries d WHERE d.status = 'pending'"
            " AND d.sink > s.sink) FROM s WHERE s.sink IS NOT NULL)"
            " SELECT sink FROM s WHERE sink IS NOT NULL"
        )
        return [r[0] for r in rows]

    async def _dead_letter(self, sinks: Sequence[str], limit: int, now: float) -> dict[str, int]:
        ended: dict[str, int] = {}
        async with self._transaction() as conn:
            for sink in sinks:
                if limit <= 0:
                    break
                error = storable_text(removed_sink_error(sink))
                # Locked in a CTE of their own (see _claim); a row another transaction settled
                # meanwhile is checked again after its lock and left out.
                cur = await conn.execute(
                    "WITH picked AS (SELECT id FROM deliveries WHERE sink = %s"
                    " AND status = 'pending' ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE),"
                    " ended AS (UPDATE deliveries d SET status = 'dead', last_status_code = NULL,"
                    " last_error = %s, updated_at = %s, claimed_by = NULL, lease_until = NULL"
                    " FROM picked WHERE d.id = picked.id RETURNING d.id)"
                    " INSERT INTO attempts (delivery_id, started_at, duration_ms, status_code,"
                    " error, outcome) SELECT id, %s, 0, NULL, %s, 'dead' FROM ended",
                    (sink, limit, error, now, now, error),
                )
                if cur.rowcount:
                    ended[sink] = cur.rowcount
                    limit -= cur.rowcount
        return ended

    async def sink_stats(
        self, sinks: Sequence[str], since: float, cap: int
    ) -> dict[str, SinkStats]:
        stats: dict[str, SinkStats] = {}
        # The newest `cap` attempts at most (attempt ids grow with time), like SQLite's.
        [(newest,)] = await self._all("SELECT COALESCE(MAX(id), 0) FROM attempts")
        ended = await self._all(
            "SELECT d.sink, a.outcome, COUNT(*) FROM attempts a"
            " JOIN deliveries d ON d.id = a.delivery_id WHERE a.id > %s AND a.started_at >= %s"
            " AND a.outcome IN ('delivered', 'dead') GROUP BY 1, 2",
            (newest - cap, since),
        )
        [(oldest_in_window,)] = await self._all(
            "SELECT COALESCE(MIN(started_at), 0) FROM attempts WHERE id > %s", (newest - cap,)
        )
        counts = {(r[0], r[1]): int(r[2]) for r in ended}
        exact = newest <= cap or float(oldest_in_window) < since
        for sink in sinks:
            [(pending, oldest)] = await self._all(
                "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM deliveries WHERE sink = %s"
                " AND status = 'pending' LIMIT %s) p), (SELECT MIN(created_at) FROM deliveries"
                " WHERE sink = %s AND status = 'pending')",
                (sink, cap, sink),
            )
            stats[sink] = SinkStats(
                pending=int(pending),
                oldest_pending_at=None if oldest is None else float(oldest),
                delivered=counts.get((sink, "delivered"), 0),
                dead=counts.get((sink, "dead"), 0),
                exact=exact,
            )
        return stats

    async def mirrors_of(
        self, event_ids: Sequence[str], sink: str
    ) -> dict[str, list[MirroredOutput]]:
        rows = await self._all(
            "SELECT event_id, idx, bucket, object_key, content_type FROM mirrors"
            " WHERE sink = %s AND event_id = ANY(%s) ORDER BY event_id, idx",
            (sink, list(event_ids)),
        )
        found: dict[str, list[MirroredOutput]] = {}
        for event_id, idx, bucket, key, content_type in rows:
            found.setdefault(event_id, []).append(
                MirroredOutput(int(idx), bucket, key, content_type)
            )
        return found


def _settled(waiting_for: str | None) -> str:
    """With `waiting_for`: deliveries `d` whose event has no pending delivery to that sink."""
    if waiting_for is None:
        return ""
    return (
        " AND NOT EXISTS (SELECT 1 FROM deliveries m WHERE m.event_id = d.event_id"
        " AND m.sink = %s AND m.status = 'pending')"
    )


def _waiting(waiting_for: str | None) -> tuple[str, ...]:
    return (waiting_for,) if waiting_for is not None else ()
