"""The SQLite replay log (ReplayLog): new delivery rows for stored events, each linked to the
row it repeats, a chunk of a planned scope at a time. The planning reads both backends share
are receiver.store.base.ReplayLogBase's, the chunk query receiver.store.sql's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from receiver.store.base import ReplayLogBase
from receiver.store.model import ReplayChunk, ReplayScope
from receiver.store.rows import replay_chunk, replay_pairs
from receiver.store.sqlite.base import SqliteBase
from receiver.store.sqlite.connection import Sql


class SqliteReplay(ReplayLogBase, SqliteBase):
    async def add_replays(self, pairs: Sequence[tuple[str, str]], now: float) -> list[int]:
        return await self._write(_add_replays, pairs, now)

    async def replay_chunk(
        self, scope: ReplayScope, after: int, limit: int, now: float
    ) -> ReplayChunk:
        sql, params = self.SQL.replay_chunk_query(scope, after, limit)
        return await self._write(_replay_chunk, sql, params, scope, limit, now)


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


def _replay_chunk(
    conn: Sql, sql: str, params: Sequence[Any], scope: ReplayScope, limit: int, now: float
) -> ReplayChunk:
    position, pairs = replay_pairs(scope, conn.execute(sql, params).fetchall(), limit)
    _add_replays(conn, pairs, now)
    return replay_chunk(position, pairs)
