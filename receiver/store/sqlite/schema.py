"""The SQLite schema: its migrations, the version check at open, and whether a file can be
used at all (`hookyard check`, and the messages that say how to fix one that cannot).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from receiver.store.model import SchemaTooNew, StoreUnusable
from receiver.store.sql import job_outside_key
from receiver.store.sqlite.connection import Sql, in_transaction

# Each entry migrates the schema from version i to i + 1. Append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE events (
            id TEXT PRIMARY KEY,
            idempotency_key TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            source TEXT NOT NULL,
            provider TEXT NOT NULL,
            job_id TEXT,
            status TEXT,
            via TEXT NOT NULL,
            received_at TEXT NOT NULL,
            event_json TEXT NOT NULL,
            raw_body BLOB NOT NULL,
            headers_json TEXT NOT NULL
        )""",
        "CREATE INDEX events_job ON events (source, job_id)",
        "CREATE INDEX events_type ON events (type, id)",
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL REFERENCES events (id),
            sink TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_status_code INTEGER,
            last_error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at)",
        "CREATE INDEX deliveries_event ON deliveries (event_id)",
    ),
    (
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
            started_at REAL NOT NULL,
            duration_ms REAL NOT NULL,
            status_code INTEGER,
            error TEXT,
            outcome TEXT NOT NULL
        )""",
        "CREATE INDEX attempts_delivery ON attempts (delivery_id)",
        "CREATE INDEX deliveries_sink_due ON deliveries (sink, status, next_attempt_at)",
    ),
    (
        """CREATE TABLE jobs (
            source TEXT NOT NULL,
            job_id TEXT NOT NULL,
            state TEXT NOT NULL,
            metadata_json TEXT NOT NULL,
            created_at REAL NOT NULL,
            deadline_at REAL NOT NULL,
            next_poll_at REAL NOT NULL,
            interval_s REAL NOT NULL DEFAULT 0,
            polls INTEGER NOT NULL DEFAULT 0,
            not_found INTEGER NOT NULL DEFAULT 0,
            last_status TEXT,
            last_error TEXT,
            updated_at REAL NOT NULL,
            PRIMARY KEY (source, job_id)
        )""",
        "CREATE INDEX jobs_due ON jobs (state, next_poll_at)",
    ),
    (
        # Replays add rows like the routes do; these say which kind a row is and what it repeats.
        "ALTER TABLE deliveries ADD COLUMN cause TEXT NOT NULL DEFAULT 'route'",
        "ALTER TABLE deliveries ADD COLUMN replay_of INTEGER REFERENCES deliveries (id)",
    ),
    (
        # Claims are leases in rows, so any number of processes can share the file: a worker
        # that dies holds its rows only until lease_until.
        "ALTER TABLE deliveries ADD COLUMN claimed_by TEXT",
        "ALTER TABLE deliveries ADD COLUMN lease_until REAL",
        # (what is due is found through deliveries_sink_due; live leases through this one)
        "CREATE INDEX deliveries_leased ON deliveries (sink, lease_until)"
        " WHERE claimed_by IS NOT NULL",
        # Named leases: the poller's leader (exactly one process polls at a time).
        "CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until REAL NOT NULL)",
        # Events of one source, newest first, without sorting all of them (the admin API's and
        # the UI's source filter: 4.3 s on 1M events without it, bench/ui).
        "CREATE INDEX events_source ON events (source, id)",
    ),
    (
        # Where a mirroring s3 sink copied each output of an event (receiver.core.outputs).
        """CREATE TABLE mirrors (
            event_id TEXT NOT NULL REFERENCES events (id),
            sink TEXT NOT NULL,
            idx INTEGER NOT NULL,
            bucket TEXT NOT NULL,
            object_key TEXT NOT NULL,
            content_type TEXT NOT NULL,
            mirrored_at REAL NOT NULL,
            PRIMARY KEY (event_id, sink, idx)
        )""",
        # Deleting a delivery (retention) checks that no replay refers to it: without this
        # index that check scans every delivery, per deleted row (0.66 s for 500 events).
        "CREATE INDEX deliveries_replay_of ON deliveries (replay_of)"
        " WHERE replay_of IS NOT NULL",
    ),
    (
        # A job's events are found through their idempotency key ("{source}:{job_id}:…") and,
        # for the few events whose key is not of that form, this partial index
        # (receiver.store.sql.job_outside_key): one random index page less per event written.
        "DROP INDEX events_job",
        f"CREATE INDEX events_job_other ON events (source, job_id) WHERE {job_outside_key()}",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: Sql, path: str) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    in_transaction(conn, _apply_migrations, path)


def _apply_migrations(conn: Sql, path: str) -> None:
    current = _check_version(conn, path)
    for version in range(current, SCHEMA_VERSION):
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))


def _check_version(conn: Sql, path: str) -> int:
    (current,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database {path} has schema version {current}, newer than this hookyard "
            f"understands ({SCHEMA_VERSION}); run the newer hookyard that wrote it, or "
            "upgrade hookyard"
        )
    return int(current)


def check_file(path: str, busy_timeout_ms: int = 1000) -> None:
    """Whether `path` would open, without creating or changing anything (`hookyard check`)."""
    usable_path(path, create=False)
    if not Path(path).exists():
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=busy_timeout_ms / 1000)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            if "schema_version" in tables:
                _check_version(conn, path)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise unusable(path, exc, busy_timeout_ms) from None


def usable_path(path: str, *, create: bool) -> None:
    """StoreUnusable unless `path` can hold a SQLite database this user can write: a file (or
    nothing yet) in a writable directory. With `create`, make missing directories."""
    file = Path(path)
    if file.is_dir():
        raise StoreUnusable(
            f"{path} is a directory, not a database file; point [server] database at a file "
            f"in it, e.g. sqlite:///{file / 'hookyard.db'}"
        )
    parent = next((p for p in file.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise StoreUnusable(
            f"cannot put the database at {path}: {parent} is a file, not a directory; "
            "fix [server] database"
        )
    if create:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnusable(
                f"cannot create the directory {file.parent} for the database {path}: "
                f"{exc.strerror}; create it or fix [server] database"
            ) from None
        parent = file.parent
    # WAL mode creates `-wal` and `-shm` files next to the database, so the directory must be
    # writable even when the file exists.
    if not os.access(parent, os.W_OK | os.X_OK) or (
        file.exists() and not os.access(file, os.R_OK | os.W_OK)
    ):
        raise StoreUnusable(
            f"cannot write the database {path}: this user ({os.getuid()}) needs read and "
            f"write access to the file and to its directory {parent}; fix the permissions "
            "or [server] database"
        )


def unusable(path: str, exc: BaseException, busy_timeout_ms: int = 0) -> StoreUnusable:
    """A driver error met while opening `path`, as a message that says what to do."""
    if isinstance(exc, StoreUnusable):
        return exc
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
        fix = (
            "is not a SQLite database (damaged, or another kind of file); move it aside "
            "(hookyard then starts a new one) or point [server] database at the right file"
        )
    elif "locked" in text or "busy" in text:
        fix = (
            f"is locked by another process (waited {busy_timeout_ms / 1000:g} s); stop the "
            "program holding it (a sqlite3 shell, a backup, another hookyard) and start again"
        )
    elif "readonly" in text or "read-only" in text:
        fix = "is read-only for this user; fix the permissions of the file and its directory"
    elif "full" in text or "disk I/O" in text:
        fix = f"cannot be written ({text}); free disk space and check the disk"
    elif "unable to open" in text:
        fix = "cannot be opened; check that its directory exists and this user may write there"
    else:
        fix = f"cannot be used ({type(exc).__name__}: {text}); check the file and its directory"
    return StoreUnusable(f"the database {path} {fix}")
