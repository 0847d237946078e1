"""The SQLite store and the batching ingest writer in front of it."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.core import events
from receiver.core.errors import StoreUnavailable
from receiver.ingest import Ingest
from receiver.router import Router
from receiver.settings import Route
from receiver.store import EventFilter, NewEvent, Stored
from receiver.store.sql import job_outside_key
from receiver.store.sqlite import SCHEMA_VERSION, SchemaTooNew, SqliteStore


def completed(job: str, status: str = "completed") -> events.Event:
    return events.generation_event(source="rg", provider="rendergrid", job_id=job, status=status,
                                   via="webhook", raw={"id": job})


def item(ev: events.Event, sinks: tuple[str, ...] = ("a",)) -> NewEvent:
    return NewEvent(ev, b'{"id": "x"}', {"content-type": "application/json"}, sinks)


async def test_schema_is_created_then_left_alone(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    for _ in range(2):
        store = SqliteStore(path)
        await store.open()
        await store.close()
    with sqlite3.connect(path) as db:  # SQL on purpose: the schema table and the PRAGMA
        versions = db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]  # each applied once
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as db:  # SQL on purpose: a newer version's schema, planted
        db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaTooNew, match="upgrade hookyard"):
        await SqliteStore(path).open()


async def test_an_older_file_gets_the_partial_job_index_and_keeps_finding_its_jobs(
    tmp_path: Path,
) -> None:
    """The last migration swaps events_job (source, job_id) for events_job_other: events
    written before it are found by job through their key or the new index."""
    path = str(tmp_path / "s.db")
    store = SqliteStore(path)
    await store.open()
    generated, = await store.write_events([item(completed("old-job"))])
    other = dataclasses.replace(completed("old-job", "processing"), idempotency_key="rg:m-1")
    keyed_otherwise, = await store.write_events([item(other)])
    await store.close()
    with sqlite3.connect(path) as db:  # SQL on purpose: back to the schema before it
        db.execute("DROP INDEX events_job_other")
        db.execute("CREATE INDEX events_job ON events (source, job_id)")
        db.execute("DELETE FROM schema_version WHERE version = ?", (SCHEMA_VERSION,))
    store = SqliteStore(path)
    await store.open()
    try:
        found = await store.list_events(EventFilter(source="rg", job_id="old-job"))
        assert {e["id"] for e in found} == {generated.event_id, keyed_otherwise.event_id}
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "events_job_other" in indexes and "events_job" not in indexes
        # only the event keyed otherwise is in the partial index
        where = job_outside_key()
        in_index = f"SELECT COUNT(*) FROM events INDEXED BY events_job_other WHERE {where}"  # noqa: S608
        assert db.execute(in_index).fetchone() == (1,)


async def test_one_batch_dedupes_within_itself_and_against_the_log(store: SqliteStore) -> None:
    [first] = await store.write_events([item(completed("j1"))])
    results = await store.write_events(
        [item(completed("j1")), item(completed("j2")), item(completed("j2"))]
    )
    assert results[0] == Stored(first.event_id, True, 0)
    assert results[1].duplicate is False and results[1].deliveries == 1
    assert results[2] == Stored(results[1].event_id, True, 0)
    assert await store.count_events() == 2


async def test_late_non_terminal_in_the_same_batch_gets_no_deliveries(store: SqliteStore) -> None:
    before, done, after = await store.write_events(
        [item(completed("j", "processing")), item(completed("j")),
         item(completed("j", "queued"))]
    )
    assert (before.deliveries, done.deliveries, after.deliveries) == (1, 1, 0)


async def test_a_bad_item_does_not_fail_its_batch(store: SqliteStore) -> None:
    """An item the store rejects (here: a body that is not bytes) fails alone, with a 503."""
    ingest = Ingest(store, Router([Route(("*",), ("*",), ("a",))]))
    await ingest.start()
    try:
        bad = completed("bad")
        good = [completed(f"g{i}") for i in range(20)]
        real_ingest = ingest.submit

        async def ingest_bad() -> Stored:
            return await real_ingest(bad, object(), {})  # type: ignore[arg-type]

        answers = await asyncio.gather(
            ingest_bad(), *(ingest.submit(ev, b"{}", {}) for ev in good),
            return_exceptions=True,
        )
    finally:
        await ingest.stop()
    assert isinstance(answers[0], StoreUnavailable)
    assert all(isinstance(a, Stored) and not a.duplicate for a in answers[1:])


async def test_stop_commits_everything_already_queued(store: SqliteStore) -> None:
    ingest = Ingest(store, Router([]))
    await ingest.start()
    pending = [asyncio.create_task(ingest.submit(completed(f"j{i}"), b"{}", {}))
               for i in range(50)]
    await asyncio.sleep(0)  # all 50 are queued
    await ingest.stop()
    results = await asyncio.gather(*pending)
    assert await store.count_events() == 50 and len({r.event_id for r in results}) == 50


def test_event_ids_sort_by_time() -> None:
    ids = [events.new_event_id(now_ms=ms) for ms in (1, 2, 1000, 2**40)]
    assert ids == sorted(ids) and all(len(i) == 30 for i in ids)


@settings(max_examples=300)
@given(ms=st.integers(0, 2**48 - 1), seed=st.integers(0, 2**32))
def test_an_event_id_is_the_ulid_of_its_time_and_random_bits(ms: int, seed: int) -> None:
    # One Crockford base-32 character per 5 bits, most significant first (the ULID spec).
    value = (ms << 80) | random.Random(seed).getrandbits(80)
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    ulid = "".join(alphabet[(value >> shift) & 31] for shift in range(125, -5, -5))
    state = events._random.getstate()
    events._random.seed(seed)
    try:
        assert events.new_event_id(now_ms=ms) == "evt_" + ulid
    finally:
        events._random.setstate(state)  # ids made after this test stay unpredictable
