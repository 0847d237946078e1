"""The PostgreSQL schema: its migrations, run at start-up under an advisory lock so replicas
starting together migrate once.
"""

from __future__ import annotations

from typing import Any, cast

import psycopg

from receiver.store.model import SchemaTooNew, display_url

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


async def migrate(conn: psycopg.AsyncConnection[Any], url: str) -> None:
    """Bring the schema to SCHEMA_VERSION, inside the caller's transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
    cur = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
    (current,) = cast(tuple[int], await cur.fetchone())
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{display_url(url)} has schema version {current}, newer than this"
            f" hookyard understands ({SCHEMA_VERSION}); upgrade hookyard"
        )
    for version in range(current, SCHEMA_VERSION):
        for statement in MIGRATIONS[version]:
            await conn.execute(statement)
        await conn.execute(
            "INSERT INTO schema_version (version) VALUES (%s)", (version + 1,)
        )
