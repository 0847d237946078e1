"""The append-only event log, its delivery queue and job table, behind small role Protocols.

`open_store(url)` picks the backend from the database URL: SQLite (aiosqlite, WAL) is the
embedded default, PostgreSQL (psycopg 3) the way past one machine. The model and the Protocols
live in receiver.store.model; this package re-exports them.
"""

from __future__ import annotations

from receiver.core.errors import ConfigError
from receiver.store.model import (
    DELIVERY_STATUSES,
    JOB_STATES,
    POSTGRES_SCHEMES,
    Coordination,
    DeliveryQueue,
    Due,
    EventFilter,
    EventLog,
    Job,
    JobTable,
    NewEvent,
    Outcome,
    Pruned,
    ReplayChunk,
    ReplayLog,
    ReplayScope,
    SchemaTooNew,
    SinkStats,
    Store,
    Stored,
    StoreUnusable,
    age_bound,
    database_password,
    display_url,
    new_owner_id,
    owner_is_dead,
    removed_sink_error,
)

__all__ = [
    "DELIVERY_STATUSES",
    "JOB_STATES",
    "POSTGRES_SCHEMES",
    "Coordination",
    "DeliveryQueue",
    "Due",
    "EventFilter",
    "EventLog",
    "Job",
    "JobTable",
    "NewEvent",
    "Outcome",
    "Pruned",
    "ReplayChunk",
    "ReplayLog",
    "ReplayScope",
    "SchemaTooNew",
    "SinkStats",
    "Store",
    "StoreUnusable",
    "Stored",
    "age_bound",
    "check_store",
    "database_password",
    "display_url",
    "new_owner_id",
    "open_store",
    "owner_is_dead",
    "removed_sink_error",
]


def open_store(database: str, *, writer_process: bool = False) -> Store:
    """The Store for a `database` URL from the config (not opened yet: `await store.open()`,
    which raises StoreUnusable for a file that cannot be used). `writer_process`: SQLite
    commits event batches in a child process (`hookyard serve`; receiver.store.sqlite.writer)."""
    if database.startswith("sqlite:///"):
        from receiver.store.sqlite import SqliteStore

        return SqliteStore(database.removeprefix("sqlite:///"), writer_process=writer_process)
    if database.startswith(POSTGRES_SCHEMES):
        from receiver.store.postgres import PostgresStore

        return PostgresStore(database)
    raise ConfigError(
        f"database {display_url(database)!r}: use sqlite:///PATH or "
        "postgresql://user@host:5432/dbname"
    )


def check_store(database: str) -> None:
    """StoreUnusable if a configured SQLite file could not be opened; creates nothing. (A
    PostgreSQL URL is checked for its form only: `check` does not connect.)"""
    if database.startswith("sqlite:///"):
        from receiver.store.sqlite import check_file

        check_file(database.removeprefix("sqlite:///"))


