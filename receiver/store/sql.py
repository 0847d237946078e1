"""SQL both backends write the same way, but for their placeholders: column lists, shared
statements, filters, cursors and replay scopes.

Shared statements are written with `?` placeholders; `Dialect.marks` turns them into the
backend's. Only placeholders carry values; column and table names are ours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from receiver.core.events import ID_TIME_SLACK_MS, event_id_at
from receiver.store.model import EventFilter, ReplayScope


def _same(value: str) -> Any:
    return value


EVENT_COLUMNS = (
    "id, idempotency_key, type, source, provider, job_id, status, via, received_at, event_json,"
    " raw_body, headers_json"
)
DELIVERY_COLUMNS = (
    "id, event_id, sink, status, attempts, next_attempt_at, last_status_code, last_error,"
    " cause, replay_of, created_at, updated_at"
)
JOB_COLUMNS = (
    "source, job_id, state, metadata_json, created_at, deadline_at, next_poll_at, interval_s,"
    " polls, not_found, last_status, last_error, updated_at"
)

# GET /v1/events/{id}: the event, its deliveries, their attempts, where its outputs were mirrored.
EVENT_SQL = "SELECT event_json, raw_body FROM events WHERE id = ?"
DELIVERIES_OF_EVENT_SQL = (
    f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ? ORDER BY id"  # noqa: S608
)
ATTEMPTS_OF_EVENT_SQL = (
    "SELECT a.delivery_id, a.started_at, a.duration_ms, a.status_code, a.error, a.outcome"
    " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
    " WHERE d.event_id = ? ORDER BY a.id"
)
MIRRORS_SQL = (
    "SELECT sink, idx AS \"index\", bucket, object_key AS key, content_type, mirrored_at"
    " FROM mirrors WHERE event_id = ? ORDER BY sink, idx"
)

# The next events in id order below the age bound, each with whether it may go now.
PRUNE_CANDIDATES = (
    "SELECT id, received_at < ? AND NOT EXISTS (SELECT 1 FROM deliveries d"
    " WHERE d.event_id = events.id AND d.status = 'pending')"
    " FROM events WHERE id > ? AND id < ? ORDER BY id LIMIT ?"
)


def job_outside_key(table: str = "") -> str:
    """The events whose idempotency key does not begin with "{source}:{job_id}:" but that
    have a job: on SQLite only these are in the (partial) index events_job_other.

    Every generation event's key begins that way (receiver.core.events.generation_event), so
    its job is found through the unique key's index by prefix; indexing (source, job_id) for
    every event wrote a random index page per event at each commit (the job ids are random),
    the largest share of the SQLite writer's work (bench/RESULTS.md, fourth session)."""
    t = f"{table}." if table else ""
    return (
        f"{t}job_id IS NOT NULL AND substr({t}idempotency_key, 1, length({t}source)"
        f" + length({t}job_id) + 2) <> {t}source || ':' || {t}job_id || ':'"
    )


def job_key_range(source: str, job_id: str) -> tuple[str, str]:
    """[low, high): exactly the keys that begin with "{source}:{job_id}:" (';' follows ':')."""
    prefix = f"{source}:{job_id}"
    return f"{prefix}:", f"{prefix};"


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one backend writes a parameter (`?` or `%s`), a list parameter, a text value, a
    cursor over two columns, and the events' insertion order."""

    mark: str
    array: bool = False  # `= ANY(%s)` with one list parameter, instead of `IN (?, ?, …)`
    text: Callable[[str], Any] = _same
    row_values: bool = False  # `(a, b) > (%s, %s)`, instead of `a > ? OR (a = ? AND b > ?)`
    sequence: str = "rowid"  # the events column that counts up as they are inserted
    # Events of a job found by idempotency key prefix or events_job_other (job_outside_key),
    # not through an index on (source, job_id) of every event
    job_by_key: bool = False

    def marks(self, sql: str) -> str:
        """A shared statement, written with `?`, in this backend's placeholders."""
        return sql if self.mark == "?" else sql.replace("?", self.mark)

    def page(
        self,
        select: str,
        where: tuple[list[str], list[Any]],
        cursor: tuple[str, list[Any]] | None,
        order: str,
        limit: int,
    ) -> tuple[str, list[Any]]:
        """One page of a keyset listing: `{select} WHERE … ORDER BY {order} LIMIT n`, with the
        conditions `where` and, if given, the cursor's (the rows after the previous page)."""
        clauses, params = where
        if cursor is not None:
            clauses, params = [*clauses, cursor[0]], [*params, *cursor[1]]
        return (
            f"{select} WHERE {' AND '.join(clauses)} ORDER BY {order} LIMIT {self.mark}",
            [*params, limit],
        )

    def events_page(
        self, where: EventFilter, before: str | None, limit: int
    ) -> tuple[str, list[Any]]:
        """list_events' statement: matching events, newest first by id, below `before`.

        With a job id, the few matching rows are found through events (source, job_id) and
        then sorted: the cursor and the order are on `id || ''` (the same text), which no
        index provides, because SQLite would otherwise walk events (source, id) over every
        event of the source to skip that sort (bench/ui: 143 ms per search at 200,000 events,
        against 1.4 ms)."""
        key = "id" if where.job_id is None else "(id || '')"
        return self.page(
            "SELECT event_json FROM events",
            self.event_where(where, "events"),
            None if before is None else (f"{key} < ?", [before]),
            f"{key} DESC",
            limit,
        )

    def pair_after(self, columns: tuple[str, str], after: tuple[str, str]) -> tuple[str, list[Any]]:
        """Rows whose (first, second) column pair sorts after `after` (a keyset cursor)."""
        first, second = columns
        if self.row_values:
            return f"({first}, {second}) > ({self.mark}, {self.mark})", [
                after[0], self.text(after[1])
            ]
        return (
            f"({first} > {self.mark} OR ({first} = {self.mark} AND {second} > {self.mark}))",
            [after[0], after[0], after[1]],
        )

    def equals(self, prefix: str, **columns: Any) -> tuple[list[str], list[Any]]:
        """`column = ?` for each column given a value (None: no condition)."""
        clauses, params = ["1 = 1"], []
        for column, value in columns.items():
            if value is not None:
                clauses.append(f"{prefix}{column} = {self.mark}")
                params.append(self.text(value) if isinstance(value, str) else value)
        return clauses, params

    def within(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """`column` is one of `values` (none: false)."""
        if self.array:
            return f"{column} = ANY({self.mark})", [list(values)]
        marks = ",".join([self.mark] * len(values)) or "NULL"
        return f"{column} IN ({marks})", list(values)

    def event_where(self, where: EventFilter, table: str) -> tuple[list[str], list[Any]]:
        """Conditions on `table` (events or its alias) for `where`."""
        source, job_id = where.source, where.job_id
        if self.job_by_key and source is not None and job_id is not None:  # finds_job(where)
            # `+` keeps SQLite from walking events_source (source, id) or events_type over every
            # event of the source or type (its choice without statistics); the access clause
            # finds the job's few rows.
            clauses, params = self.equals(f"+{table}.", type=where.type)
            access, more = self.job_access(table, source, [job_id])
            clauses += [f"+{table}.source = {self.mark}", f"+{table}.job_id = {self.mark}", access]
            params += [source, job_id, *more]
        else:
            clauses, params = self.equals(
                f"{table}.", source=where.source, type=where.type, job_id=where.job_id
            )
        # received_at has no index; ids begin with the same moment, so each time also bounds
        # the id (with slack): a `since` that matches less than a page read the whole table
        # (1.2 s at 1M events, bench/ui), now a range of the primary key.
        for time_bound, op, slack_ms in (
            (where.since, ">=", -ID_TIME_SLACK_MS),
            (where.until, "<", ID_TIME_SLACK_MS),
        ):
            if time_bound is None:
                continue
            clauses.append(f"{table}.received_at {op} {self.mark}")
            params.append(time_bound)
            id_bound = event_id_at(time_bound, slack_ms)
            if id_bound is not None:
                clauses.append(f"{table}.id {op} {self.mark}")
                params.append(id_bound)
        return clauses, params

    def finds_job(self, where: EventFilter) -> bool:
        """Whether event_where finds `where`'s events through job_access."""
        return self.job_by_key and where.job_id is not None and where.source is not None

    def job_access(self, table: str, source: str, job_ids: Sequence[str]) -> tuple[str, list[Any]]:
        """A condition that every event of `source` with one of `job_ids` meets (so it changes
        no result), written so that SQLite finds those events through its indexes: each job's
        key range, or events_job_other (a MULTI-INDEX OR)."""
        t, m = f"{table}.", self.mark
        ranges = [f"({t}idempotency_key >= {m} AND {t}idempotency_key < {m})"] * len(job_ids)
        params: list[Any] = [bound for j in job_ids for bound in job_key_range(source, j)]
        marks = ",".join([m] * len(job_ids))
        other = f"({job_outside_key(table)} AND {t}source = {m} AND {t}job_id IN ({marks}))"
        return f"({' OR '.join([*ranges, other])})", [*params, source, *job_ids]

    def latest_where(self, scope: ReplayScope) -> tuple[str, list[Any]]:
        """Deliveries `d` (joined to events `e`) that are the latest of their (event, sink)
        pair, in the scope's status, to the scope's sinks, up to its horizon."""
        clauses, params = self.event_where(scope.filter, "e")
        sinks, sink_params = self.within("d.sink", scope.sinks)
        clauses += [
            f"d.status = {self.mark}",
            f"d.id <= {self.mark}",
            sinks,
            "NOT EXISTS (SELECT 1 FROM deliveries l"
            " WHERE l.event_id = d.event_id AND l.sink = d.sink AND l.id > d.id)",
        ]
        params += [scope.delivery_status, scope.upto, *sink_params]
        return " AND ".join(clauses), params

    def replay_chunk_query(
        self, scope: ReplayScope, after: int, limit: int
    ) -> tuple[str, list[Any]]:
        """The next `limit` rows of a replay scope after the position `after`, as
        rows.replay_pairs reads them: the latest deliveries in a status by id, or the
        matching events by insertion order."""
        if scope.delivery_status is not None:
            where, params = self.latest_where(scope)
            return (
                "SELECT d.id, d.event_id, d.sink FROM deliveries d"  # noqa: S608
                f" JOIN events e ON e.id = d.event_id WHERE {where} AND d.id > {self.mark}"
                f" ORDER BY d.id LIMIT {self.mark}",
                [*params, after, limit],
            )
        clauses, params = self.event_where(scope.filter, "events")
        # A job's rows come through job_access; a range of the sequence would walk them all.
        seq = f"+{self.sequence}" if self.finds_job(scope.filter) else self.sequence
        return (
            f"SELECT {seq}, id, source, type FROM events WHERE {' AND '.join(clauses)}"  # noqa: S608
            f" AND {seq} > {self.mark} AND {seq} <= {self.mark} ORDER BY {seq} LIMIT {self.mark}",
            [*params, after, scope.upto, limit],
        )
