"""The PostgreSQL store: the same Store as SQLite, for several processes or hosts at once.

psycopg 3 (async) with a connection pool. Prepared statements are off (`prepare_threshold=None`)
so the store works behind PgBouncer in transaction mode. The schema is versioned like SQLite's
and migrated at start-up under an advisory lock, so replicas starting together migrate once.

Claims are leases in rows: `claim_due` stamps rows with this store's owner id and a lease end,
other stores skip rows under a live lease, and `record_outcomes` changes only rows this owner
still holds. A process that dies keeps its rows until their leases end; then anyone takes them.
No transaction is held open across anything but the database's own round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast

import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from receiver.core.errors import StoreUnavailable
from receiver.core.events import TERMINAL_STATUSES
from receiver.core.outputs import MirroredOutput
from receiver.store.model import (
    Due,
    EventFilter,
    Job,
    NewEvent,
    Outcome,
    Pruned,
    ReplayChunk,
    ReplayScope,
    SchemaTooNew,
    SinkStats,
    Stored,
    age_bound,
    display_url,
)
from receiver.store.rows import (
    Batch,
    Written,
    event_doc,
    job_from_row,
    job_row,
    mirror_rows,
    prepare,
    results,
    with_job_metadata,
)
from receiver.store.sql import (
    DELIVERY_COLUMNS,
    JOB_COLUMNS,
    MIRRORS_SQL,
    PRUNE_CANDIDATES,
    Dialect,
)

log = structlog.get_logger("hookyard.store")

SQL = Dialect("%s", array=True, text=lambda value: storable_text(value))
CHANNEL = "hookyard"  # NOTIFY channel: "new rows to look at"
POLL_BACKSTOP_S = 0.5  # without LISTEN, idle workers look this often


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The store's own error for the server's failures (gone, restarting, no pooled connection
    in time, a standby that takes no writes); errors of one item's data pass through."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError,
            psycopg.errors.ReadOnlySqlTransaction, PoolTimeout, OSError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise StoreUnavailable(f"the PostgreSQL store failed: {reason}") from exc


# Each entry migrates the schema from version i to i + 1. Append, never edit. Text columns
# that are compared or sorted use the "C" collation: byte order, as in SQLite, whatever the
# database's default locale (event ids must sort by time, cursors must agree with ORDER BY).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE events (
            seq BIGSERIAL NOT NULL UNIQUE,
            id TEXT COLLATE "C" PRIMARY KEY,
            idempotency_key TEXT NOT NULL UNIQUE,
            type TEXT COLLATE "C" NOT NULL,
            source TEXT COLLATE "C" NOT NULL,
            provider TEXT NOT NULL,
            job_id TEXT COLLATE "C",
            status TEXT,
            via TEXT NOT NULL,
            received_at TEXT COLLATE "C" NOT NULL,
            event_json TEXT NOT NULL,
            raw_body BYTEA NOT NULL,
            headers_json TEXT NOT NULL
        )""",
        "CREATE INDEX events_job ON events (source, job_id)",
        "CREATE INDEX events_type ON events (type, id)",
        """CREATE TABLE deliveries (
            id BIGSERIAL PRIMARY KEY,
            event_id TEXT COLLATE "C" NOT NULL REFERENCES events (id),
            sink TEXT COLLATE "C" NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at DOUBLE PRECISION NOT NULL,
            last_status_code INTEGER,
            last_error TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            cause TEXT NOT NULL DEFAULT 'route',
            replay_of BIGINT REFERENCES deliveries (id),
            claimed_by TEXT,
            lease_until DOUBLE PRECISION
        )""",
        # What the claim query and next_due_at scan: pending rows only, so the index stays as
        # small as the backlog however many rows were delivered.
        "CREATE INDEX deliveries_due ON deliveries (sink, next_attempt_at, id)"
        " WHERE status = 'pending'",
        "CREATE INDEX deliveries_pending_age ON deliveries (created_at) WHERE status = 'pending'",
        "CREATE INDEX deliveries_event ON deliveries (event_id, sink, id)",
        "CREATE INDEX deliveries_status ON deliveries (status, id)",
        """CREATE TABLE attempts (
            id BIGSERIAL PRIMARY KEY,
            delivery_id BIGINT NOT NULL REFERENCES deliveries (id),
            started_at DOUBLE PRECISION NOT NULL,
            duration_ms DOUBLE PRECISION NOT NULL,
            status_code INTEGER,
            error TEXT,
            outcome TEXT NOT NULL
        )""",
        "CREATE INDEX attempts_delivery ON attempts (delivery_id)",
        """CREATE TABLE jobs (
            source TEXT COLLATE "C" NOT NULL,
            job_id TEXT COLLATE "C" NOT NULL,
            state TEXT NOT NULL,
            metadata_json TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            deadline_at DOUBLE PRECISION NOT NULL,
            next_poll_at DOUBLE PRECISION NOT NULL,
            interval_s DOUBLE PRECISION NOT NULL DEFAULT 0,
            polls INTEGER NOT NULL DEFAULT 0,
            not_found INTEGER NOT NULL DEFAULT 0,
            last_status TEXT,
            last_error TEXT,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (source, job_id)
        )""",
        "CREATE INDEX jobs_due ON jobs (next_poll_at) WHERE state = 'watching'",
    ),
    (
        # Named leases: the poller's leader (exactly one process polls at a time).
        "CREATE TABLE leases (name TEXT COLLATE \"C\" PRIMARY KEY, holder TEXT NOT NULL,"
        " until DOUBLE PRECISION NOT NULL)",
        # Events of one source, newest first (the admin API's and the UI's source filter).
        "CREATE INDEX events_source ON events (source, id)",
        # Where a mirroring s3 sink copied each output of an event (receiver.core.outputs).
        """CREATE TABLE mirrors (
            event_id TEXT COLLATE "C" NOT NULL REFERENCES events (id),
            sink TEXT COLLATE "C" NOT NULL,
            idx INTEGER NOT NULL,
            bucket TEXT NOT NULL,
            object_key TEXT NOT NULL,
            content_type TEXT NOT NULL,
            mirrored_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (event_id, sink, idx)
        )""",
        # Deleting a delivery (retention) checks that no replay refers to it: without this
        # index that check scans every delivery, per deleted row.
        "CREATE INDEX deliveries_replay_of ON deliveries (replay_of)"
        " WHERE replay_of IS NOT NULL",
        # Retention removes ended jobs by age.
        "CREATE INDEX jobs_ended ON jobs (updated_at) WHERE state <> 'watching'",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
# Any constant shared by every hookyard: the key of the advisory lock migrations run under.
MIGRATION_LOCK = 0x686F6F6B79617264  # "hookyard"

Conn = psycopg.AsyncConnection[Any]


class PostgresStore:
    """Store on a PostgreSQL database, shared safely by any number of processes.

    `owner` names this process in the claims it writes (a fresh uuid4 hex by default);
    `lease_s` is how long a claim holds when its owner neither finishes nor releases it
    (longer than any send takes). `pool_size` connections at most are opened.
    """

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

    # -- lifecycle -------------------------------------------------------------------------

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
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            cur = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            (current,) = cast(tuple[int], await cur.fetchone())
            if current > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"{display_url(self.url)} has schema version {current}, newer than this"
                    f" hookyard understands ({SCHEMA_VERSION}); upgrade hookyard"
                )
            for version in range(current, SCHEMA_VERSION):
                for statement in MIGRATIONS[version]:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_version (version) VALUES (%s)", (version + 1,)
                )

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
        with _translated():
            async with self._open_pool().connection() as conn:
                async with conn.transaction():
                    yield conn
                if notify:
                    await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with _translated():
            async with self._open_pool().connection() as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchall()

    async def _dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with _translated():
            async with self._open_pool().connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(sql, params)
                return await cur.fetchall()

    def _open_pool(self) -> AsyncConnectionPool[Conn]:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

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

    async def count_jobs(self, state: str) -> int:
        [(count,)] = await self._all("SELECT COUNT(*) FROM jobs WHERE state = %s", (state,))
        return int(count)

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

    async def ping(self) -> None:
        await self._all("SELECT 1")

    # -- writing ---------------------------------------------------------------------------

    async def write_events(self, items: Sequence[NewEvent]) -> list[Stored]:
        batch, positions = prepare(items, time.time())
        async with self._transaction(notify=bool(batch.deliveries)) as conn:
            written = await _write_batch(conn, batch)
        return results(batch, positions, written)

    # -- delivering ------------------------------------------------------------------------

    async def claim_due(
        self,
        sink: str,
        now: float,
        limit: int,
        lease_s: float | None = None,
        *,
        waiting_for: str | None = None,
    ) -> list[Due]:
        if limit <= 0:
            return []
        until = now + (lease_s or self.lease_s)
        # The rows are picked in a CTE of their own: a CTE that locks rows runs exactly once,
        # so the LIMIT holds however the planner joins (an IN (subquery) may be re-run).
        rows = await self._all(
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
        return [Due(r[0], sink, r[1], event_doc(r[2], r[3]), until) for r in rows]

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
                _columns(
                    [
                        (
                            o.delivery_id,
                            o.started_at,
                            round(o.duration_s * 1000, 3),
                            o.status_code,
                            storable_text(o.error),
                            o.status,
                        )
                        for o in outcomes
                    ],
                    6,
                ),
            )
            await conn.execute(
                "UPDATE deliveries d SET status = o.status, attempts = o.attempts,"
                " next_attempt_at = o.next_at, last_status_code = o.code, last_error = o.error,"
                " updated_at = o.updated_at, claimed_by = NULL, lease_until = NULL"
                " FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::float8[], %s::int[],"
                " %s::text[], %s::float8[]) AS o(id, status, attempts, next_at, code, error,"
                " updated_at) WHERE d.id = o.id AND d.claimed_by = %s",
                (
                    *_columns(
                        [
                            (
                                o.delivery_id,
                                o.status,
                                o.attempts,
                                o.next_attempt_at,
                                o.status_code,
                                storable_text(o.error),
                                o.started_at + o.duration_s,
                            )
                            for o in outcomes
                        ],
                        7,
                    ),
                    self.owner,
                ),
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
                    _columns([storable_row(row) for row in mirrors], 7),
                )

    async def release(self, delivery_ids: Sequence[int]) -> None:
        await self.renew(delivery_ids, None)

    async def renew(self, delivery_ids: Sequence[int], until: float | None) -> int:
        """Move the lease end of this owner's rows among `delivery_ids` (None: give them
        back); rows another owner holds now are left alone."""
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

    async def delivery_counts(self) -> dict[tuple[str, str], int]:
        rows = await self._all("SELECT sink, status, COUNT(*) FROM deliveries GROUP BY 1, 2")
        return {(r[0], r[1]): int(r[2]) for r in rows}

    # -- watched jobs ----------------------------------------------------------------------

    async def watch_job(self, job: Job) -> tuple[Job, bool]:
        async with self._transaction(notify=True) as conn:
            cur = await conn.execute(
                f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES"  # noqa: S608
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (source, job_id) DO NOTHING RETURNING 1",
                storable_row(job_row(job)),
            )
            if await cur.fetchone() is not None:
                return job, True
            cur = await conn.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE source = %s AND job_id = %s",  # noqa: S608
                (job.source, storable_text(job.job_id)),
            )
            return job_from_row(cast(tuple[Any, ...], await cur.fetchone())), False

    async def due_jobs(self, now: float, limit: int, exclude: set[tuple[str, str]]) -> list[Job]:
        rows = await self._all(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'watching' AND next_poll_at <= %s"  # noqa: S608
            " ORDER BY next_poll_at LIMIT %s",
            (now, limit + len(exclude)),
        )
        jobs = [job_from_row(r) for r in rows]
        return [j for j in jobs if (j.source, j.job_id) not in exclude][:limit]

    async def next_job_due_at(self) -> float | None:
        [(at,)] = await self._all("SELECT MIN(next_poll_at) FROM jobs WHERE state = 'watching'")
        return None if at is None else float(at)

    async def save_jobs(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        async with self._transaction() as conn, conn.cursor() as cur:
            await cur.executemany(
                "UPDATE jobs SET state = %s, metadata_json = %s, created_at = %s,"
                " deadline_at = %s, next_poll_at = %s, interval_s = %s, polls = %s,"
                " not_found = %s, last_status = %s, last_error = %s, updated_at = %s"
                " WHERE source = %s AND job_id = %s AND state = 'watching'",
                [
                    (*storable_row(job_row(job))[2:], job.source, storable_text(job.job_id))
                    for job in jobs
                ],
            )

    async def get_job(self, source: str, job_id: str) -> Job | None:
        rows = await self._all(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE source = %s AND job_id = %s",  # noqa: S608
            (source, storable_text(job_id)),
        )
        return job_from_row(rows[0]) if rows else None

    async def list_jobs(
        self,
        source: str | None = None,
        state: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[Job]:
        where, params = SQL.equals("", source=source, state=state)
        if after is not None:
            where.append("(source, job_id) > (%s, %s)")
            params.extend([after[0], storable_text(after[1])])
        sql = (
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)}"  # noqa: S608
            " ORDER BY source, job_id LIMIT %s"
        )
        return [job_from_row(r) for r in await self._all(sql, (*params, limit))]

    async def delete_job(self, source: str, job_id: str) -> bool:
        rows = await self._all(
            "DELETE FROM jobs WHERE source = %s AND job_id = %s RETURNING 1",
            (source, storable_text(job_id)),
        )
        return bool(rows)

    # -- reading ---------------------------------------------------------------------------

    async def count_events(self) -> int:
        [(count,)] = await self._all("SELECT COUNT(*) FROM events")
        return int(count)

    async def get_event(self, event_id: str) -> dict[str, Any] | None:
        rows = await self._all("SELECT event_json, raw_body FROM events WHERE id = %s", (event_id,))
        if not rows:
            return None
        event = event_doc(rows[0][0], rows[0][1])
        deliveries = await self._dicts(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = %s ORDER BY id",  # noqa: S608
            (event_id,),
        )
        attempts = await self._dicts(
            "SELECT a.delivery_id, a.started_at, a.duration_ms, a.status_code, a.error,"
            " a.outcome FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " WHERE d.event_id = %s ORDER BY a.id",
            (event_id,),
        )
        for delivery in deliveries:
            delivery["attempt_log"] = [
                {k: v for k, v in a.items() if k != "delivery_id"}
                for a in attempts
                if a["delivery_id"] == delivery["id"]
            ]
        event["deliveries"] = deliveries
        event["mirrors"] = await self._dicts(MIRRORS_SQL.replace("?", "%s"), (event_id,))
        return event

    async def list_events(
        self, where: EventFilter, before: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        clauses, params = SQL.event_where(where, "events")
        if before is not None:
            clauses.append("id < %s")
            params.append(before)
        sql = (
            f"SELECT event_json FROM events WHERE {' AND '.join(clauses)}"  # noqa: S608
            " ORDER BY id DESC LIMIT %s"
        )
        return [json.loads(r[0]) for r in await self._all(sql, (*params, limit))]

    async def list_deliveries(
        self,
        status: str | None = None,
        sink: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        clauses, params = SQL.equals("", status=status, sink=sink)
        if after is not None:
            clauses.append("id > %s")
            params.append(after)
        sql = (
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {' AND '.join(clauses)}"  # noqa: S608
            " ORDER BY id LIMIT %s"
        )
        return await self._dicts(sql, (*params, limit))

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

    async def add_replays(self, pairs: Sequence[tuple[str, str]], now: float) -> list[int]:
        async with self._transaction(notify=True) as conn:
            return await _add_replays(conn, pairs, now)

    async def replay_horizon(self) -> tuple[int, int]:
        [(events, deliveries)] = await self._all(
            "SELECT (SELECT COALESCE(MAX(seq), 0) FROM events),"
            " (SELECT COALESCE(MAX(id), 0) FROM deliveries)"
        )
        return int(events), int(deliveries)

    async def event_kinds(self, where: EventFilter, upto: int) -> dict[tuple[str, str], int]:
        clauses, params = SQL.event_where(where, "events")
        sql = (
            f"SELECT source, type, COUNT(*) FROM events WHERE {' AND '.join(clauses)}"  # noqa: S608
            " AND seq <= %s GROUP BY source, type"
        )
        rows = await self._all(sql, (*params, upto))
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def count_latest(self, scope: ReplayScope) -> tuple[int, int]:
        where, params = SQL.latest_where(scope)
        sql = (
            "SELECT COUNT(DISTINCT d.event_id), COUNT(*) FROM deliveries d"  # noqa: S608
            f" JOIN events e ON e.id = d.event_id WHERE {where}"
        )
        [(events, deliveries)] = await self._all(sql, params)
        return int(events), int(deliveries)

    async def replay_chunk(
        self, scope: ReplayScope, after: int, limit: int, now: float
    ) -> ReplayChunk:
        chooser = _latest_pairs if scope.delivery_status is not None else _routed_pairs
        async with self._transaction(notify=True) as conn:
            position, pairs = await chooser(conn, scope, after, limit)
            await _add_replays(conn, pairs, now)
        return ReplayChunk(position, frozenset(e for e, _ in pairs), len(pairs))

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

    async def pending_stats(self) -> tuple[int, float | None]:
        [(count, oldest)] = await self._all(
            "SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE status = 'pending'"
        )
        return int(count), None if oldest is None else float(oldest)

    # -- retention and durable outputs -----------------------------------------------------

    async def prune(
        self, older_than: float, after: str | None, limit: int, *, dry_run: bool = False
    ) -> Pruned:
        # Batched deletes (not partitions: dedupe needs idempotency_key unique across all
        # events, which a partitioned table cannot enforce; bench/RESULTS.md has numbers).
        id_bound, at_bound = age_bound(older_than)
        rows = await self._all(
            PRUNE_CANDIDATES.replace("?", "%s"), (at_bound, after or "", id_bound, limit)
        )
        position = rows[-1][0] if len(rows) == limit else None
        ids = [r[0] for r in rows if r[1]]
        if not ids:
            return Pruned(after=position)
        if dry_run:
            [(deliveries, attempts, mirrors)] = await self._all(
                "SELECT (SELECT COUNT(*) FROM deliveries WHERE event_id = ANY(%s)),"
                " (SELECT COUNT(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
                " WHERE d.event_id = ANY(%s)),"
                " (SELECT COUNT(*) FROM mirrors WHERE event_id = ANY(%s))",
                (ids, ids, ids),
            )
            return Pruned(len(ids), int(deliveries), int(attempts), int(mirrors), after=position)
        async with self._transaction() as conn:
            counts = await _delete_events(conn, ids, at_bound)
        return Pruned(*counts, after=position)

    async def prune_jobs(self, older_than: float, limit: int, *, dry_run: bool = False) -> int:
        select = (
            "SELECT source, job_id FROM jobs WHERE state <> 'watching' AND updated_at < %s"
            " LIMIT %s"
        )
        if dry_run:
            return len(await self._all(select, (older_than, limit)))
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


# -- statements that run inside a transaction -------------------------------------------------


async def _write_batch(conn: Conn, batch: Batch) -> Written:
    """A few statements whatever the batch size: the late-status check, one INSERT of every
    event, one of every delivery, and (only if some keys existed) one lookup of their ids.

    Rows go in idempotency-key order so that two transactions inserting overlapping batches
    wait for each other's keys in the same order instead of deadlocking. A concurrent insert
    of the same key waits for the other transaction, then conflicts, and reads its id."""
    suppressed = batch.suppressed | await _finished_elsewhere(conn, batch.maybe_late)
    if batch.jobs:
        sources, job_ids = _columns([(s, storable_text(j)) for s, j in batch.jobs], 2)
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
        if batch.finished_jobs:
            ends = sorted(batch.finished_jobs.items())
            done_sources, done_ids, states = _columns(
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
        "INSERT INTO events (id, idempotency_key, type, source, provider, job_id, status, via,"
        " received_at, event_json, raw_body, headers_json) SELECT * FROM unnest("
        "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
        " %s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[])"
        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        _columns(rows, 12),
    )
    inserted = {r[0] for r in await cur.fetchall()}
    deliveries = [d for d in batch.deliveries if d[0] in inserted and d[0] not in suppressed]
    if deliveries:
        now = deliveries[0][3]
        event_ids, sinks = _columns([(d[0], d[1]) for d in deliveries], 2)
        await conn.execute(
            "INSERT INTO deliveries (event_id, sink, status, next_attempt_at, created_at,"
            " updated_at) SELECT e, s, 'pending', %s, %s, %s"
            " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS d(e, s, n) ORDER BY n",
            (now, now, now, event_ids, sinks),
        )
    counts: dict[str, int] = {}
    for d in deliveries:
        counts[d[0]] = counts.get(d[0], 0) + 1
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
    return Written(inserted, existing, counts)


async def _finished_elsewhere(conn: Conn, jobs: dict[str, tuple[str, str]]) -> set[str]:
    """The ids (keys of `jobs`) whose job already has a terminal event in the log."""
    if not jobs:
        return set()
    sources, job_ids = _columns([(s, storable_text(j)) for s, j in set(jobs.values())], 2)
    cur = await conn.execute(
        "SELECT DISTINCT e.source, e.job_id FROM events e"
        " JOIN unnest(%s::text[], %s::text[]) AS k(source, job_id)"
        " ON e.source = k.source AND e.job_id = k.job_id WHERE e.status = ANY(%s)",
        (sources, job_ids, sorted(TERMINAL_STATUSES)),
    )
    finished = {(r[0], r[1]) for r in await cur.fetchall()}
    return {i for i, (s, j) in jobs.items() if (s, storable_text(j)) in finished}


async def _add_replays(conn: Conn, pairs: Sequence[tuple[str, str]], now: float) -> list[int]:
    """One INSERT for all pairs; ids are drawn in the pairs' order, so sorted ids match them."""
    if not pairs:
        return []
    event_ids, sinks = _columns(list(pairs), 2)
    cur = await conn.execute(
        "INSERT INTO deliveries (event_id, sink, status, next_attempt_at, created_at, updated_at,"
        " cause, replay_of) SELECT p.e, p.s, 'pending', %s, %s, %s, 'replay',"
        " (SELECT MAX(l.id) FROM deliveries l WHERE l.event_id = p.e AND l.sink = p.s)"
        " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS p(e, s, n) ORDER BY p.n"
        " RETURNING id",
        (now, now, now, event_ids, sinks),
    )
    return sorted(r[0] for r in await cur.fetchall())


async def _latest_pairs(
    conn: Conn, scope: ReplayScope, after: int, limit: int
) -> tuple[int | None, list[tuple[str, str]]]:
    where, params = SQL.latest_where(scope)
    sql = (
        "SELECT d.id, d.event_id, d.sink FROM deliveries d"  # noqa: S608
        f" JOIN events e ON e.id = d.event_id WHERE {where} AND d.id > %s ORDER BY d.id LIMIT %s"
    )
    cur = await conn.execute(sql, (*params, after, limit))
    rows = await cur.fetchall()
    position = rows[-1][0] if len(rows) == limit else None
    return position, [(r[1], r[2]) for r in rows]


async def _routed_pairs(
    conn: Conn, scope: ReplayScope, after: int, limit: int
) -> tuple[int | None, list[tuple[str, str]]]:
    clauses, params = SQL.event_where(scope.filter, "events")
    sql = (
        f"SELECT seq, id, source, type FROM events WHERE {' AND '.join(clauses)}"  # noqa: S608
        " AND seq > %s AND seq <= %s ORDER BY seq LIMIT %s"
    )
    cur = await conn.execute(sql, (*params, after, scope.upto, limit))
    rows = await cur.fetchall()
    position = rows[-1][0] if len(rows) == limit else None
    pairs = [
        (event_id, sink)
        for _, event_id, source, type_ in rows
        for sink in (scope.sinks or scope.routes.get((source, type_), ()))
    ]
    return position, pairs


# -- SQL pieces --------------------------------------------------------------------------------


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows turned into `width` column lists, the parameters of an unnest(...)."""
    return [[row[i] for row in rows] for i in range(width)] if rows else [[] for _ in range(width)]


def storable_text(value: str | None) -> str | None:
    """A string PostgreSQL can store: TEXT cannot hold NUL, which JSON (hence a job id or an
    error text) can. NUL becomes U+FFFD; the exact value stays in the event JSON and raw body."""
    return value.replace("\x00", "\ufffd") if value is not None and "\x00" in value else value


def storable_row(row: Sequence[Any]) -> tuple[Any, ...]:
    """A row with its text columns made storable (see storable_text)."""
    return tuple(storable_text(v) if isinstance(v, str) else v for v in row)


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
