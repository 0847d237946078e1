"""Rows both backends store and read the same way: events as a prepared batch, the results of
writing one, rows to and from the dataclasses, and the JSON of the stored documents.

Pure Python, no SQL and no driver: the dedupe and late-status rules are written once here, and
each backend only runs its own statements on what this prepares.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from receiver.core import jsonx
from receiver.core.events import Event
from receiver.store.model import Job, NewEvent, Outcome, ReplayChunk, ReplayScope, Stored

EVENT_JSON_COLUMN = 9  # in an events row as event_row makes it


# -- a batch of events to write -----------------------------------------------------------------


@dataclass(slots=True)
class Batch:
    """A batch of events prepared on the event loop, so that the database thread runs little
    more than SQL: Python work there contends for the GIL with the busy loop and stretches
    every commit (measured: ~125 µs a row, against ~10 µs a row prepared here)."""

    keys: list[str] = field(default_factory=list)  # distinct idempotency keys, first seen first
    ids: list[str] = field(default_factory=list)  # the event id proposed for each key
    event_rows: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)  # (event_id, sink, …)
    suppressed: set[str] = field(default_factory=set)  # late non-terminal: stored, not routed
    maybe_late: dict[str, tuple[str, str]] = field(default_factory=dict)  # id → (source, job)
    jobs: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # job → its rows
    # job → the state its terminal event ends it in (done, or expired for generation.expired)
    finished_jobs: dict[tuple[str, str], str] = field(default_factory=dict)


@dataclass(slots=True)
class Written:
    """What a backend's write of a Batch did."""

    inserted: set[str]
    existing: dict[str, str]  # key → id of the event stored before this batch
    deliveries: dict[str, int]  # event id → delivery rows created


def prepare(items: Sequence[NewEvent], now: float) -> tuple[Batch, list[int]]:
    """The batch, and for each item the index of its key in `batch.keys`."""
    batch = Batch()
    index: dict[str, int] = {}
    finished_here: set[tuple[str, str | None]] = set()
    positions = []
    for item in items:
        ev = item.event
        position = index.get(ev.idempotency_key)
        if position is None:
            position = index[ev.idempotency_key] = len(batch.keys)
            _add(batch, item, now, finished_here)
        positions.append(position)
        if ev.is_terminal:  # even a duplicate proves the job finished
            finished_here.add((ev.source, ev.job_id))
            if ev.job_id is not None:
                batch.finished_jobs[(ev.source, ev.job_id)] = (
                    "expired" if ev.status == "expired" else "done"
                )
    return batch, positions


def _add(batch: Batch, item: NewEvent, now: float, finished: set[tuple[str, str | None]]) -> None:
    ev = item.event
    batch.keys.append(ev.idempotency_key)
    batch.ids.append(ev.id)
    if ev.job_id is not None:
        batch.jobs.setdefault((ev.source, ev.job_id), []).append(len(batch.event_rows))
    batch.event_rows.append(event_row(item))
    batch.deliveries.extend((ev.id, sink, "pending", now, now, now) for sink in item.sinks)
    if ev.job_id is not None and not ev.is_terminal:
        # A late non-terminal status (processing after completed) is history, not news.
        if (ev.source, ev.job_id) in finished:
            batch.suppressed.add(ev.id)
        else:
            batch.maybe_late[ev.id] = (ev.source, ev.job_id)


def with_job_metadata(batch: Batch, found: Mapping[tuple[str, str], str]) -> None:
    """Copy each watched job's registered metadata (JSON text) onto the batch's events of that
    job that carry none: in the same transaction as the event, so the event says what it was
    registered with whichever process stored it (webhook or poll, web or worker)."""
    for key, metadata in found.items():
        if metadata in ("{}", ""):
            continue
        for row_index in batch.jobs.get(key, ()):
            row = list(batch.event_rows[row_index])
            doc = jsonx.loads(row[EVENT_JSON_COLUMN], numbers=jsonx.NULL)
            if not doc.get("metadata"):
                doc["metadata"] = jsonx.loads(metadata, numbers=jsonx.NULL)
                row[EVENT_JSON_COLUMN] = jsonx.dumps(doc).decode()
                batch.event_rows[row_index] = tuple(row)


def results(batch: Batch, positions: list[int], written: Written) -> list[Stored]:
    """One Stored per item of the batch, in order (a repeat of a key within it is a duplicate)."""
    stored: list[Stored] = []
    seen: set[int] = set()
    for position in positions:
        key, event_id = batch.keys[position], batch.ids[position]
        if event_id in written.inserted and position not in seen:
            stored.append(Stored(event_id, False, written.deliveries.get(event_id, 0)))
        else:
            stored.append(Stored(written.existing.get(key, event_id), True, 0))
        seen.add(position)
    return stored


# -- items for another process (the SQLite writer process) ---------------------------------------

# An event's fields but `raw`, its last (the provider's parsed payload: a row keeps the exact
# bytes instead), so the values rebuild an Event positionally.
*_SENT_FIELDS, _LAST = (f.name for f in fields(Event))
if _LAST != "raw":
    raise RuntimeError("receiver.core.events.Event must keep `raw` as its last field")
_sent_values = operator.attrgetter(*_SENT_FIELDS)


def plain_item(item: NewEvent) -> tuple[Any, ...]:
    """`item` as a tuple of plain values, for a pipe to another process: pickling it costs a
    tenth of pickling the dataclasses (measured: 3 µs against 24 µs an item)."""
    return (_sent_values(item.event), item.raw_body, item.headers, item.sinks)


def from_plain(values: tuple[Any, ...]) -> NewEvent:
    """The NewEvent `plain_item` was made from (its event's `raw` is None)."""
    event_values, raw_body, headers, sinks = values
    return NewEvent(Event(*event_values), raw_body, headers, sinks)


def delivery_counts(deliveries: Sequence[tuple[Any, ...]]) -> dict[str, int]:
    """event id → how many of these delivery rows are its."""
    counts: dict[str, int] = {}
    for row in deliveries:
        counts[row[0]] = counts.get(row[0], 0) + 1
    return counts


# -- rows and the dataclasses -------------------------------------------------------------------


def event_row(item: NewEvent) -> tuple[Any, ...]:
    """An events row (the columns of sql.EVENT_COLUMNS), its JSON checked."""
    ev = item.event
    doc = ev.to_json()
    del doc["raw"]  # kept once, as the exact bytes received
    return (
        ev.id,
        ev.idempotency_key,
        ev.type,
        ev.source,
        ev.provider,
        ev.job_id,
        ev.status,
        ev.via,
        ev.received_at,
        json_text(doc, "event"),
        item.raw_body,
        json_text(dict(item.headers), "headers"),
    )


def job_from_row(row: Sequence[Any]) -> Job:
    """A Job from a row of sql.JOB_COLUMNS."""
    return Job(row[0], row[1], row[2], stored_json(row[3]), *row[4:])


def job_row(job: Job) -> tuple[Any, ...]:
    """A jobs row (the columns of sql.JOB_COLUMNS), its metadata checked."""
    return (
        job.source,
        job.job_id,
        job.state,
        json_text(job.metadata, "metadata"),
        job.created_at,
        job.deadline_at,
        job.next_poll_at,
        job.interval_s,
        job.polls,
        job.not_found,
        job.last_status,
        job.last_error,
        job.updated_at,
    )


def attempt_rows(outcomes: Sequence[Outcome]) -> list[tuple[Any, ...]]:
    """(delivery id, started at, duration in ms, status code, error, outcome) per attempt."""
    return [
        (o.delivery_id, o.started_at, round(o.duration_s * 1000, 3), o.status_code, o.error,
         o.status)
        for o in outcomes
    ]


def settled_rows(outcomes: Sequence[Outcome]) -> list[tuple[Any, ...]]:
    """(status, attempts, next attempt at, status code, error, updated at, delivery id) per
    outcome: the delivery's state after the attempt."""
    return [
        (o.status, o.attempts, o.next_attempt_at, o.status_code, o.error,
         o.started_at + o.duration_s, o.delivery_id)
        for o in outcomes
    ]


def mirror_rows(outcomes: Sequence[Outcome]) -> list[tuple[Any, ...]]:
    """(sink, index, bucket, key, content type, time, delivery id) per mirrored output."""
    return [
        (o.sink, m.index, m.bucket, m.key, m.content_type, o.started_at + o.duration_s,
         o.delivery_id)
        for o in outcomes
        for m in o.mirrored
    ]


def event_with_deliveries(
    event: dict[str, Any],
    deliveries: list[dict[str, Any]],
    attempts: list[dict[str, Any]],
    mirrors: list[dict[str, Any]],
) -> dict[str, Any]:
    """GET /v1/events/{id}: the event with its deliveries, each with its attempts, and where
    its outputs were mirrored."""
    for delivery in deliveries:
        delivery["attempt_log"] = [
            {k: v for k, v in a.items() if k != "delivery_id"}
            for a in attempts
            if a["delivery_id"] == delivery["id"]
        ]
    event["deliveries"] = deliveries
    event["mirrors"] = mirrors
    return event


def replay_pairs(
    scope: ReplayScope, rows: Sequence[Sequence[Any]], limit: int
) -> tuple[int | None, list[tuple[str, str]]]:
    """The position after these rows (None: the scope is exhausted) and the (event, sink)
    pairs they add, from the rows of sql.replay_chunk_query."""
    position = rows[-1][0] if len(rows) == limit else None
    if scope.delivery_status is not None:  # (delivery id, event id, sink)
        return position, [(r[1], r[2]) for r in rows]
    pairs = [  # (sequence number, event id, source, type)
        (event_id, sink)
        for _, event_id, source, type_ in rows
        for sink in (scope.sinks or scope.routes.get((source, type_), ()))
    ]
    return position, pairs


def replay_chunk(position: int | None, pairs: Sequence[tuple[str, str]]) -> ReplayChunk:
    return ReplayChunk(position, frozenset(e for e, _ in pairs), len(pairs))


# -- the JSON boundary: only strict JSON is written, so every read gives strict JSON back ----


def json_text(value: dict[str, Any], name: str) -> str:
    """`value` as the JSON text of a column. A NaN or infinite float in it (an event's cost or
    metadata, a job's metadata) is a ValueError naming the field (`event.cost`): written, it
    would make every admin API page holding the row fail, and sinks would receive `NaN`."""
    jsonx.require_finite(value, name)
    return jsonx.dumps(value).decode()


def stored_json(text: str) -> Any:
    """A JSON column as written by `json_text`. Rows from before that rule may hold NaN or
    Infinity (Python's json wrote them); those read as null instead of failing every read."""
    try:
        return jsonx.loads(text, numbers=jsonx.NULL)
    except jsonx.JSONError:
        return json.loads(text, parse_constant=lambda _: None)


def event_doc(event_json: str, raw_body: bytes) -> dict[str, Any]:
    """The normalized event as sinks and the API see it: the stored JSON plus `raw`."""
    event: dict[str, Any] = stored_json(event_json)
    event["raw"] = decode_raw(raw_body)
    return event


def decode_raw(body: bytes) -> Any:
    """The exact bytes received, parsed as the webhook endpoint parsed them (a number too large
    for a double reads as null); a body that is not strict JSON (an old row) is shown as text."""
    try:
        return jsonx.loads(body, numbers=jsonx.NULL)
    except jsonx.JSONError:
        return body.decode("utf-8", "replace")
