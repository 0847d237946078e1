"""The SQLite delivery queue (DeliveryQueue): leasing due rows, settling them with their
attempts and mirror records, moving leases, retrying a row, and each sink's health. The
shells and listings both backends share are receiver.store.base.DeliveryQueueBase's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from receiver.core.outputs import MirroredOutput
from receiver.store.base import DeliveryQueueBase
from receiver.store.model import Outcome, SinkStats, removed_sink_error
from receiver.store.rows import attempt_rows, mirror_rows, settled_rows
from receiver.store.sql import DELIVERY_COLUMNS
from receiver.store.sqlite.base import SqliteBase
from receiver.store.sqlite.connection import Sql, chunks, dicts, fetch_all
from receiver.store.sqlite.events import events_where_in


class SqliteDeliveries(DeliveryQueueBase, SqliteBase):
    async def _claim(
        self, sink: str, now: float, limit: int, until: float, waiting_for: str | None
    ) -> list[tuple[Any, ...]]:
        # A claim need not survive a power cut (the row would simply be sent again), so it
        # skips the fsync: the next durable commit writes it out with its own.
        return await self._write(
            _lease_due, sink, now, limit, self.owner, until, waiting_for, durable=False
        )

    async def next_due_at(self, sink: str, *, waiting_for: str | None = None) -> float | None:
        # The first free row by the index; a row under a live lease is due when the lease ends
        # (its holder may have died), found through the small index of leased rows.
        settled = _settled("d", "?3") if waiting_for else ""
        [(free, leased)] = await self._read(
            fetch_all,
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

    async def _move_leases(self, delivery_ids: Sequence[int], until: float | None) -> int:
        return await self._write(_renew, delivery_ids, self.owner, until, durable=False)

    async def retry_delivery(self, delivery_id: int, now: float) -> tuple[dict[str, Any], bool]:
        return await self._write(_retry_delivery, delivery_id, now)

    async def _pending_sinks(self) -> list[str]:
        # Each step jumps to the next sink name in deliveries_sink_due (sink, status, …) and
        # asks it for one pending row: a few index lookups per sink, however many rows.
        rows = await self._read(
            fetch_all,
            "WITH RECURSIVE s(sink) AS (SELECT MIN(sink) FROM deliveries UNION ALL"
            " SELECT (SELECT MIN(sink) FROM deliveries WHERE sink > s.sink) FROM s"
            " WHERE s.sink IS NOT NULL) SELECT sink FROM s WHERE sink IS NOT NULL"
            " AND EXISTS (SELECT 1 FROM deliveries d WHERE d.sink = s.sink"
            " AND d.status = 'pending')",
            (),
        )
        return [r[0] for r in rows]

    async def _dead_letter(self, sinks: Sequence[str], limit: int, now: float) -> dict[str, int]:
        return await self._write(_dead_letter, list(sinks), limit, now)

    async def sink_stats(
        self, sinks: Sequence[str], since: float, cap: int
    ) -> dict[str, SinkStats]:
        return await self._read(_sink_stats, list(sinks), since, cap)

    async def mirrors_of(
        self, event_ids: Sequence[str], sink: str
    ) -> dict[str, list[MirroredOutput]]:
        return await self._read(_mirrors_of, list(event_ids), sink)


def _settled(alias: str, mark: str) -> str:
    """A condition on deliveries `alias`: its event has no pending delivery to the sink named
    by the parameter `mark` (the mirror a sink with outputs_from waits for has settled)."""
    return (
        f" AND NOT EXISTS (SELECT 1 FROM deliveries m WHERE m.event_id = {alias}.event_id"  # noqa: S608
        f" AND m.sink = {mark} AND m.status = 'pending')"
    )


def _lease_due(
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
        for r in events_where_in(
            conn, "id, event_json, raw_body", "id", [c[2] for c in claimed]
        )
    }
    claimed.sort(key=lambda c: c[0])
    return [(c[0], c[1], *bodies[c[2]]) for c in claimed]


def _record_outcomes(conn: Sql, outcomes: Sequence[Outcome], owner: str) -> None:
    """Every attempt is logged; a delivery's state changes only while `owner` still holds its
    lease (a worker whose lease ran out must not overwrite what the next holder did)."""
    conn.executemany(
        "INSERT INTO attempts (delivery_id, started_at, duration_ms, status_code, error, outcome)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        attempt_rows(outcomes),
    )
    conn.executemany(
        "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?,"
        " last_status_code = ?, last_error = ?, updated_at = ?, claimed_by = NULL,"
        " lease_until = NULL WHERE id = ? AND claimed_by = ?",
        [(*row, owner) for row in settled_rows(outcomes)],
    )
    conn.executemany(
        "INSERT INTO mirrors (event_id, sink, idx, bucket, object_key, content_type,"
        " mirrored_at) SELECT event_id, ?, ?, ?, ?, ?, ? FROM deliveries WHERE id = ?"
        " ON CONFLICT (event_id, sink, idx) DO UPDATE SET bucket = excluded.bucket,"
        " object_key = excluded.object_key, content_type = excluded.content_type,"
        " mirrored_at = excluded.mirrored_at",
        mirror_rows(outcomes),
    )


def _renew(conn: Sql, ids: Sequence[int], owner: str, until: float | None) -> int:
    """Move the lease end of `owner`'s rows among `ids` (None: give them back)."""
    changed = 0
    for chunk in chunks(list(ids)):
        marks = ",".join("?" * len(chunk))
        claimed_by = owner if until is not None else None
        cur = conn.execute(
            f"UPDATE deliveries SET claimed_by = ?, lease_until = ? WHERE id IN ({marks})"  # noqa: S608
            " AND claimed_by = ? AND status = 'pending'",
            (claimed_by, until, *chunk, owner),
        )
        changed += cur.rowcount
    return changed


def _retry_delivery(conn: Sql, delivery_id: int, now: float) -> tuple[dict[str, Any], bool]:
    sql = f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?"  # noqa: S608
    found = dicts(conn, sql, (delivery_id,))
    if not found:
        raise KeyError(delivery_id)
    if found[0]["status"] == "pending":
        return found[0], False
    conn.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, updated_at = ?"
        " WHERE id = ?",
        (now, now, delivery_id),
    )
    return dicts(conn, sql, (delivery_id,))[0], True


def _dead_letter(conn: Sql, sinks: list[str], limit: int, now: float) -> dict[str, int]:
    """Up to `limit` pending rows of `sinks` (leased or not) become dead with the removed
    sink's error, each with a final attempt saying so; sink → rows made dead."""
    ended: dict[str, int] = {}
    for sink in sinks:
        if limit <= 0:
            break
        error = removed_sink_error(sink)
        ids = conn.execute(
            "UPDATE deliveries SET status = 'dead', last_status_code = NULL, last_error = ?,"
            " updated_at = ?, claimed_by = NULL, lease_until = NULL WHERE id IN ("
            " SELECT id FROM deliveries WHERE sink = ? AND status = 'pending'"
            " ORDER BY next_attempt_at LIMIT ?) RETURNING id",
            (error, now, sink, limit),
        ).fetchall()
        if not ids:
            continue
        conn.executemany(
            "INSERT INTO attempts (delivery_id, started_at, duration_ms, status_code, error,"
            " outcome) VALUES (?, ?, 0, NULL, ?, 'dead')",
            [(delivery_id, now, error) for (delivery_id,) in ids],
        )
        ended[sink] = len(ids)
        limit -= len(ids)
    return ended


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


def _mirrors_of(conn: Sql, event_ids: list[str], sink: str) -> dict[str, list[MirroredOutput]]:
    found: dict[str, list[MirroredOutput]] = {}
    for chunk in chunks(sorted(set(event_ids))):
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
