"""The PostgreSQL store's plumbing: the connection pool, transactions (with the change notice
other processes wait for), the translation of server failures into the store's own error,
and the SQL pieces every role uses (the Dialect, unnest columns, storable text).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, ClassVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from receiver.core.errors import StoreUnavailable
from receiver.store.base import SqlStore, Statement
from receiver.store.model import display_url
from receiver.store.postgres.schema import migrate
from receiver.store.sql import Dialect

CHANNEL = "hookyard"  # NOTIFY channel: "new rows to look at"

Conn = psycopg.AsyncConnection[Any]


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """The store's own error for the server's failures (gone, restarting, no pooled connection
    in time, a standby that takes no writes); errors of one item's data pass through."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError,
            psycopg.errors.ReadOnlySqlTransaction, PoolTimeout, OSError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise StoreUnavailable(f"the PostgreSQL store failed: {reason}") from exc


class PostgresBase(SqlStore):
    """What every PostgreSQL role module works through (see receiver.store.postgres)."""

    SQL: ClassVar[Dialect] = Dialect(
        "%s", array=True, text=lambda value: storable_text(value), row_values=True,
        sequence="seq",
    )

    def __init__(
        self,
        url: str,
        *,
        owner: str | None = None,
        lease_s: float = 300.0,
        pool_size: int = 10,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.owner = owner or uuid.uuid4().hex
        self.lease_s = lease_s
        self.pool_size = pool_size
        self.connect_timeout_s = connect_timeout_s
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._listener: psycopg.AsyncConnection[Any] | None = None  # wait_for_change's
        self._listen_failed = False

    async def open(self) -> None:
        """Connect and migrate. An unreachable server is a ConnectionError that names it
        (password masked) and says why, within `connect_timeout_s`."""
        await self._check_reachable()
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self.pool_size,
            open=False,
            timeout=self.connect_timeout_s,  # waiting for a free connection
            kwargs=self._connection_options(),
            # A connection the server dropped (restart, failover, idle kill) is replaced when
            # it is next taken from the pool, instead of failing the batch that takes it.
            check=AsyncConnectionPool.check_connection,
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout_s)
            self._pool = pool
            await self._migrate()
        except BaseException:
            await pool.close()
            self._pool = None
            raise

    def _connection_options(self) -> dict[str, Any]:
        return {
            "autocommit": True,  # reads are single statements; writes open transactions
            "prepare_threshold": None,  # PgBouncer in transaction mode has no sessions
            "connect_timeout": max(1, round(self.connect_timeout_s)),
            "application_name": "hookyard",
            # A server that vanished without closing the connection (a partition, a dead
            # host) is noticed within about a minute instead of a query waiting forever.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": 60_000,
        }

    async def _check_reachable(self) -> None:
        """One direct connection first: the pool would only say it timed out, not why."""
        try:
            conn = await psycopg.AsyncConnection.connect(self.url, **self._connection_options())
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__  # libpq's lines, joined
            raise ConnectionError(f"cannot connect to {display_url(self.url)}: {reason}") from None
        await conn.close()

    async def _migrate(self) -> None:
        async with self._transaction() as conn:
            await migrate(conn, self.url)

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
        self._pool = None

    @contextlib.asynccontextmanager
    async def _transaction(self, *, notify: bool = False) -> AsyncIterator[Conn]:
        """A pooled connection inside one transaction, committed when the block ends. With
        `notify`, other processes' wait_for_change hears of it, AFTER the commit (a NOTIFY
        inside the transaction would serialize every commit on the notification queue)."""
        with translated():
            async with self._open_pool().connection() as conn:
                async with conn.transaction():
                    yield conn
                if notify:
                    await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with translated():
            async with self._open_pool().connection() as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchall()

    async def _dicts_together(self, statements: Sequence[Statement]) -> list[list[dict[str, Any]]]:
        with translated():
            async with self._open_pool().connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                found = []
                for sql, params in statements:
                    await cur.execute(sql, params)
                    found.append(await cur.fetchall())
                return found

    def _open_pool(self) -> AsyncConnectionPool[Conn]:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def ping(self) -> None:
        """A write that changes nothing: a server that takes no writes (a standby after a
        failover, a database set read-only) refuses it as it would refuse the next webhook,
        where a read would pass. It matches no row, so nothing is written."""
        async with self._transaction() as conn:
            await conn.execute("UPDATE schema_version SET version = version WHERE false")


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows turned into `width` column lists, the parameters of an unnest(...)."""
    return [[row[i] for row in rows] for i in range(width)] if rows else [[] for _ in range(width)]


def storable_text(value: str | None) -> str | None:
    """A string PostgreSQL can store: TEXT cannot hold NUL, which JSON (hence a job id or an
    error text) can. NUL becomes U+FFFD; the exact value stays in the event JSON and raw body."""
    return value.replace("\x00", "\ufffd") if value is not None and "\x00" in value else value


def storable_row(row: Sequence[Any]) -> tuple[Any, ...]:
    """A row with its text columns made storable (see storable_text)."""
    return tuple(storable_text(v) if isinstance(v, str) else v for v in row)
