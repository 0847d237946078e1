"""`hookyard db copy --from URL --to URL`: move a whole store, e.g. SQLite to PostgreSQL.

Both ends are opened as stores first, so each has the current schema; then the rows move by
plain SQL, table by table in the order their references need (events, deliveries, attempts,
jobs), in chunks of one transaction each. Events keep their ids and exact raw bytes,
deliveries and attempts keep their ids (PostgreSQL's id sequences are moved past them), so
replay links and cursors stay valid.

Resumable: each table continues after the last row the target already has (the source's
order: event sequence, delivery and attempt ids, job keys), and every insert ignores a row
that is there, so running the copy again after an interruption finishes it without
duplicating anything. At the end the row counts of both ends are compared.

Run it while no hookyard writes to the source: rows written during the copy may be missed
(the count check then says so). Claims (PostgreSQL's leases) are not copied: a copied
pending delivery is free for the first worker of the new store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from receiver import progress
from receiver.core.errors import ConfigError
from receiver.settings import _ENV_REF
from receiver.store import POSTGRES_SCHEMES, SchemaTooNew, display_url, open_store
from receiver.store.postgres import storable_row


@dataclass(frozen=True, slots=True)
class Table:
    """One table to copy: its columns (those both backends have) and the key it goes by."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # the order of copying, unique; resumes after the target's last


TABLES = (
    Table(
        "events",
        (
            "id", "idempotency_key", "type", "source", "provider", "job_id", "status", "via",
            "received_at", "event_json", "raw_body", "headers_json",
        ),
        ("id",),  # resumed through the source's insertion order, see _events_after
    ),
    Table(
        "deliveries",
        (
            "id", "event_id", "sink", "status", "attempts", "next_attempt_at",
            "last_status_code", "last_error", "created_at", "updated_at", "cause", "replay_of",
        ),
        ("id",),
    ),
    Table(
        "attempts",
        ("id", "delivery_id", "started_at", "duration_ms", "status_code", "error", "outcome"),
        ("id",),
    ),
    Table(
        "jobs",
        (
            "source", "job_id", "state", "metadata_json", "created_at", "deadline_at",
            "next_poll_at", "interval_s", "polls", "not_found", "last_status", "last_error",
            "updated_at",
        ),
        ("source", "job_id"),
    ),
    Table(
        "mirrors",
        ("event_id", "sink", "idx", "bucket", "object_key", "content_type", "mirrored_at"),
        ("event_id", "sink", "idx"),
    ),
)  # fmt: skip
CHUNK = 500


@dataclass(frozen=True, slots=True)
class Result:
    counts: dict[str, tuple[int, int]]  # table → (source rows, target rows)

    @property
    def ok(self) -> bool:
        return all(source == target for source, target in self.counts.values())


Progress = Callable[[str, int, int], None]  # table, rows copied in all, rows to copy in all


def copy(source_url: str, target_url: str, progress: Progress, chunk: int = CHUNK) -> Result:
    """Copy every row of the store at `source_url` into the store at `target_url`."""
    if source_url == target_url:
        raise ConfigError("--from and --to name the same database; nothing to copy")
    asyncio.run(_migrate(source_url, target_url))
    with _side(source_url) as source, _side(target_url) as target:
        totals = {t.name: source.count(t.name) for t in TABLES}
        done = {t.name: target.count(t.name) for t in TABLES}
        for table in TABLES:
            after = _resume_at(table, source, target)
            while True:
                rows = source.rows_after(table, after, chunk)
                if not rows:
                    break
                target.insert(table, rows)
                done[table.name] += len(rows)
                progress(table.name, sum(done.values()), sum(totals.values()))
                after = _key(table, rows[-1])
        target.finish()
        return Result({t.name: (source.count(t.name), target.count(t.name)) for t in TABLES})


async def _migrate(*urls: str) -> None:
    """Open each end as a store once: creates or upgrades its schema, or refuses a newer one."""
    for url in urls:
        store = open_store(url)
        await store.open()
        await store.close()


def _resume_at(table: Table, source: _Sql, target: _Sql) -> tuple[Any, ...] | None:
    """Where in the source the copy of `table` continues: after the target's last row."""
    last = target.last_key(table)
    if last is not None and table.name == "events" and not source.has_event(str(last[0])):
        raise ConfigError(
            f"{target.label} already holds events that are not in {source.label}; "
            "copy into an empty database"
        )
    return last


def _key(table: Table, row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(row[table.columns.index(c)] for c in table.key)


# -- the two ends -----------------------------------------------------------------------------


@contextlib.contextmanager
def _side(url: str) -> Iterator[_Sql]:
    side: _Sql = _Postgres(url) if url.startswith(POSTGRES_SCHEMES) else _Sqlite(url)
    try:
        yield side
    finally:
        side.close()


class _Sql:
    """What both ends share; subclasses say how to run SQL and which placeholder they use."""

    mark = "?"
    label = ""
    # Events are copied in the order they were stored (rowid / seq), so a resumed copy knows
    # that everything before the target's last event is there.
    position = "rowid"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def count(self, table: str) -> int:
        [(n,)] = self.execute(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 (our names)
        return int(n)

    def has_event(self, event_id: str) -> bool:
        sql = f"SELECT 1 FROM events WHERE id = {self.mark}"  # noqa: S608 (a placeholder)
        return bool(self.execute(sql, (event_id,)))

    def rows_after(
        self, table: Table, after: Sequence[Any] | None, limit: int
    ) -> list[tuple[Any, ...]]:
        columns = ", ".join(table.columns)
        if table.name == "events":
            where, params = self._events_after(after)
            order = self.position
        else:
            where, params = self._after(table.key, after)
            order = ", ".join(table.key)
        sql = f"SELECT {columns} FROM {table.name} WHERE {where} ORDER BY {order} LIMIT {self.mark}"  # noqa: S608
        return self.execute(sql, (*params, limit))

    def _events_after(self, after: Sequence[Any] | None) -> tuple[str, list[Any]]:
        if after is None:
            return "TRUE", []
        m, pos = self.mark, self.position
        sql = f"{pos} > (SELECT {pos} FROM events WHERE id = {m})"  # noqa: S608 (our names)
        return sql, [after[0]]

    def _after(self, key: tuple[str, ...], after: Sequence[Any] | None) -> tuple[str, list[Any]]:
        if after is None:
            return "TRUE", []
        marks = ", ".join([self.mark] * len(key))
        return f"({', '.join(key)}) > ({marks})", list(after)

    def last_key(self, table: Table) -> tuple[Any, ...] | None:
        order = self.position if table.name == "events" else ", ".join(table.key)
        desc = " DESC, ".join(order.split(", ")) + " DESC"
        sql = f"SELECT {', '.join(table.key)} FROM {table.name} ORDER BY {desc} LIMIT 1"  # noqa: S608
        rows = self.execute(sql)
        return tuple(rows[0]) if rows else None

    def insert_sql(self, table: Table) -> str:
        marks = ", ".join([self.mark] * len(table.columns))
        return (
            f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})"  # noqa: S608
            " ON CONFLICT DO NOTHING"
        )

    def insert(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert rows in ONE transaction, skipping any already present."""
        raise NotImplementedError

    def finish(self) -> None:
        """After the copy: make new ids follow the copied ones."""

    def close(self) -> None:
        pass


class _Sqlite(_Sql):
    def __init__(self, url: str) -> None:
        self.label = url
        self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.execute("PRAGMA busy_timeout = 5000")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def insert(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(self.insert_sql(table), rows)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()


class _Postgres(_Sql):
    mark = "%s"
    position = "seq"

    def __init__(self, url: str) -> None:
        self.label = display_url(url)
        self.conn = psycopg.connect(url, autocommit=True, prepare_threshold=None)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(sql, params)
        return cur.fetchall() if cur.description else []

    def insert(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        storable = [storable_row(row) for row in rows]
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(self.insert_sql(table), storable)

    def finish(self) -> None:
        for table in ("deliveries", "attempts"):
            self.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608
                f" COALESCE(MAX(id), 0) + 1, false) FROM {table}"
            )

    def close(self) -> None:
        self.conn.close()


# -- the CLI verb ------------------------------------------------------------------------------


def expand(url: str, flag: str, environ: Mapping[str, str] | None = None) -> str:
    """`${NAME}` in a URL from the environment, so a password need not be on the command
    line (where `ps` shows it)."""
    env = os.environ if environ is None else environ

    def value(match: Any) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(
                f"{flag} uses ${{{name}}}, but the environment variable {name} is not set"
            )
        return str(env[name])

    expanded = _ENV_REF.sub(value, url)
    if not (expanded.startswith("sqlite:///") and expanded != "sqlite:///") and not (
        expanded.startswith(POSTGRES_SCHEMES)
    ):
        raise ConfigError(
            f"{flag} must be sqlite:///PATH or postgresql://user@host:5432/dbname, "
            f"not {display_url(expanded)!r}"
        )
    return expanded


def run(source: str, target: str, *, as_json: bool = False) -> int:
    """The `db copy` verb: copy with a progress bar on stderr, then the counts; 0 only if
    every table's counts match."""
    source_url, target_url = expand(source, "--from"), expand(target, "--to")
    bar = progress.Progress("db copy")
    try:
        result = copy(
            source_url,
            target_url,
            lambda table, done, total: bar.update(done, total, f"rows ({table})"),
        )
    except (OSError, sqlite3.Error, psycopg.Error, SchemaTooNew) as exc:
        bar.finish()
        print(f"hookyard: db copy stopped: {exc}; run it again to continue", file=sys.stderr)
        return 1
    bar.finish()
    _report(result, display_url(source_url), display_url(target_url), as_json)
    return 0 if result.ok else 1


def _report(result: Result, source: str, target: str, as_json: bool) -> None:
    import json

    if as_json:
        counts = {t: {"source": s, "target": d} for t, (s, d) in result.counts.items()}
        print(json.dumps({"from": source, "to": target, "ok": result.ok, "tables": counts}))
        return
    for table, (s, d) in result.counts.items():
        mark = "ok" if s == d else "MISMATCH"
        print(f"{table:<11} {s:>10} → {d:<10} {mark}")
    if result.ok:
        print(f"copied {source} to {target}; counts match")
    else:
        print(
            "counts differ: the target had other rows, or the source was written to during "
            "the copy; stop hookyard on the source and run the copy again"
        )

