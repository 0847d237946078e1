"""PostgreSQL coordination (Coordination): named leases (the poller's leader) and hearing of
other processes' commits through LISTEN/NOTIFY, or a slow poll where LISTEN is unavailable.
"""

from __future__ import annotations

import asyncio
import time

import psycopg
import structlog

from receiver.store.postgres.base import CHANNEL, PostgresBase

log = structlog.get_logger("hookyard.store")

POLL_BACKSTOP_S = 0.5  # without LISTEN, idle workers look this often


class PostgresCoordination(PostgresBase):
    async def hold_lease(
        self, name: str, owner: str, ttl_s: float
    ) -> tuple[bool, float | None]:
        now = time.time()
        async with self._transaction() as conn:
            cur = await conn.execute(
                "SELECT holder, until FROM leases WHERE name = %s FOR UPDATE", (name,)
            )
            before = await cur.fetchone()
            cur = await conn.execute(
                "INSERT INTO leases (name, holder, until) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,"
                " until = EXCLUDED.until WHERE leases.holder = EXCLUDED.holder"
                " OR leases.until < %s RETURNING holder",
                (name, owner, now + ttl_s, now),
            )
            if await cur.fetchone() is None:
                return False, None
            taken_over = before is not None and before[0] != owner
            return True, float(before[1]) if taken_over and before is not None else None

    async def release_lease(self, name: str, owner: str) -> None:
        await self._all(
            "DELETE FROM leases WHERE name = %s AND holder = %s RETURNING 1", (name, owner)
        )

    async def wait_for_change(self, timeout_s: float) -> bool:
        """LISTEN on a connection of its own; True at the first notification. Where LISTEN
        is not available (PgBouncer in transaction mode), a wake-up every POLL_BACKSTOP_S
        instead, said once in the log."""
        try:
            if self._listener is None and not self._listen_failed:
                self._listener = await psycopg.AsyncConnection.connect(
                    self.url, **self._connection_options()
                )
                await self._listener.execute(f"LISTEN {CHANNEL}")
            if self._listener is not None:
                async for _ in self._listener.notifies(timeout=timeout_s, stop_after=1):
                    return True
                return False
        except psycopg.Error as exc:
            if self._listener is not None:
                await self._listener.close()
                self._listener = None
            if not self._listen_failed:
                log.warning(
                    "store.listen_unavailable", error=" ".join(str(exc).split())[:200],
                    fallback=f"polling every {POLL_BACKSTOP_S} s",
                )
            self._listen_failed = True
        await asyncio.sleep(min(timeout_s, POLL_BACKSTOP_S))
        return True
