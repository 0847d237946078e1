"""The PostgreSQL replay log (ReplayLog): new delivery rows for stored events, each linked to
the row it repeats, a chunk of a planned scope at a time. The planning reads both backends
share are receiver.store.base.ReplayLogBase's, the chunk query receiver.store.sql's.
"""

from __future__ import annotations

from collections.abc import Sequence

from receiver.store.base import ReplayLogBase
from receiver.store.model import ReplayChunk, ReplayScope
from receiver.store.postgres.base import Conn, PostgresBase, columns
from receiver.store.rows import replay_chunk, replay_pairs


class PostgresReplay(ReplayLogBase, PostgresBase):
    async def add_replays(self, pairs: Sequence[tuple[str, str]], now: float) -> list[int]:
        async with self._transaction(notify=True) as conn:
            return await _add_replays(conn, pairs, now)

    async def replay_chunk(
        self, scope: ReplayScope, after: int, limit: int, now: float
    ) -> ReplayChunk:
        sql, params = self.SQL.replay_chunk_query(scope, after, limit)
        async with self._transaction(notify=True) as conn:
            cur = await conn.execute(sql, params)
            position, pairs = replay_pairs(scope, await cur.fetchall(), limit)
            await _add_replays(conn, pairs, now)
        return replay_chunk(position, pairs)


async def _add_replays(conn: Conn, pairs: Sequence[tuple[str, str]], now: float) -> list[int]:
    """One INSERT for all pairs; ids are drawn in the pairs' order, so sorted ids match them."""
    if not pairs:
        return []
    event_ids, sinks = columns(list(pairs), 2)
    cur = await conn.execute(
        "INSERT INTO deliveries (event_id, sink, status, next_attempt_at, created_at, updated_at,"
        " cause, replay_of) SELECT p.e, p.s, 'pending', %s, %s, %s, 'replay',"
        " (SELECT MAX(l.id) FROM deliveries l WHERE l.event_id = p.e AND l.sink = p.s)"
        " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS p(e, s, n) ORDER BY p.n"
        " RETURNING id",
        (now, now, now, event_ids, sinks),
    )
    return sorted(r[0] for r in await cur.fetchall())
