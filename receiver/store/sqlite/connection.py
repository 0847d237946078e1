"""Running work on a SQLite connection: one function per hop to the connection's thread, write
transactions (durable or light) under the file's writers' lock, and the small helpers every
role's statements use there (fetching, chunking under SQLite's parameter limit).
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import aiosqlite

from receiver.core.errors import StoreUnavailable
from receiver.store.sql import Dialect

Sql = sqlite3.Connection
T = TypeVar("T")
SQL = Dialect("?", job_by_key=True)
CHUNK = 500  # rows or values per statement: far below SQLite's 32766 parameters


async def run(db: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """fn(sqlite3 connection, *args) on the aiosqlite connection's worker thread, one hop.

    aiosqlite runs each of its own methods this way (`Connection._execute`); it has no public
    name for running a whole function, so the private one is used here and only here.
    """
    try:
        result: T = await db._execute(lambda: fn(db._conn, *args))  # type: ignore[no-untyped-call]
    except (sqlite3.DatabaseError, OSError) as exc:
        raise store_error(exc) from exc
    return result


def store_error(exc: sqlite3.Error | OSError) -> Exception:
    """What callers see of a driver error: the item's own (integrity, data, a bad statement)
    as it is, anything else as the store's StoreUnavailable (translated here, at the
    boundary)."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError | sqlite3.ProgrammingError):
        return exc
    return StoreUnavailable(f"the SQLite store failed: {exc}"[:300])


def configure(conn: Sql, busy_timeout_ms: int) -> None:
    """The settings of every connection hookyard opens on a file."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    # Takes effect only on a new file (before WAL and the first table): pruning can then give
    # pages back to the OS (PRAGMA incremental_vacuum). An older file reuses freed pages
    # instead; a one-time VACUUM converts it (README, Retention).
    if conn.execute("PRAGMA page_count").fetchone() == (0,):  # new (setting it again writes)
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")


def in_transaction(conn: Sql, fn: Callable[..., T], *args: Any) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def exclusive(
    conn: Sql, lock_fd: int | None, wrapped: Callable[..., T], fn: Callable[..., T], *args: Any
) -> T:
    """Run one write transaction holding the file's writers' lock (`flock` on PATH-lock).
    Several processes write one SQLite file (serve --workers, a worker, the CLI); without this
    they meet in SQLite's own busy handler, which sleeps 1 to 100 ms between tries and made two
    web processes slower than one. A blocked flock wakes the moment the holder lets go."""
    if lock_fd is None:
        return wrapped(conn, fn, *args)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        return wrapped(conn, fn, *args)
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)


def in_light_transaction(conn: Sql, fn: Callable[..., T], *args: Any) -> T:
    """A transaction that is atomic but not fsynced at commit (WAL, synchronous = NORMAL)."""
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        return in_transaction(conn, fn, *args)
    finally:
        conn.execute("PRAGMA synchronous = FULL")


def fetch_all(conn: Sql, sql: str, params: Sequence[Any]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


def dicts(conn: Sql, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cur = conn.execute(sql, params)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def dicts_together(
    conn: Sql, statements: Sequence[tuple[str, Sequence[Any]]]
) -> list[list[dict[str, Any]]]:
    return [dicts(conn, sql, params) for sql, params in statements]


def data_version(conn: Sql) -> int:
    """A counter that changes whenever another connection commits to the file."""
    (version,) = conn.execute("PRAGMA data_version").fetchone()
    return int(version)


def chunks(values: Sequence[T]) -> Iterable[list[T]]:
    for start in range(0, len(values), CHUNK):
        yield list(values[start : start + CHUNK])


def job_chunks(jobs: Iterable[tuple[str, str]]) -> Iterable[tuple[str, list[str], str]]:
    """(source, job ids, "?,?,…") per source and chunk, for `source = ? AND job_id IN (…)`:
    SQLite searches an index on (source, job_id) for that form; for `(source, job_id) IN
    (VALUES …)` it scans the whole index."""
    by_source: dict[str, list[str]] = {}
    for source, job_id in sorted(set(jobs)):
        by_source.setdefault(source, []).append(job_id)
    for source, job_ids in by_source.items():
        for chunk in chunks(job_ids):
            yield source, chunk, ",".join("?" * len(chunk))

