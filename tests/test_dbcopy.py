"""`hookyard db copy`: SQLite → PostgreSQL → SQLite keeps every row, and resumes after a stop."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from receiver import cli, dbcopy
from receiver.core import events
from receiver.store import Job, NewEvent, Outcome, Store
from receiver.store.postgres import PostgresStore
from receiver.store.sqlite import SqliteStore
from tests.pg import empty, pg_empty, pg_url  # noqa: F401  (fixtures)

T = TypeVar("T")
RAW_BODIES = [b'{"id": "j0"}', b"\xff\xfe\x00 not utf-8, not json", b"", b'{"a": "\\u00e9"}']


def generation(job: str, status: str = "completed") -> events.Event:
    return events.generation_event(
        source="rg", provider="rendergrid", job_id=job, status=status, via="webhook",
        raw={"id": job},
    )  # fmt: skip


async def fill(store: Store) -> None:
    """Every kind of row: raw bytes of any sort, a duplicate, a late status, deliveries
    pending, delivered and dead with attempts, replays of them, jobs in every state."""
    items = [
        NewEvent(generation(f"j{i}"), raw, {"x-i": str(i)}, ("a", "b"))
        for i, raw in enumerate(RAW_BODIES)
    ]
    await store.write_events(items)
    await store.write_events([items[0]])  # a duplicate: no second event
    await store.write_events([NewEvent(generation("j0", "processing"), b"{}", {}, ("a",))])
    due = await store.claim_due("a", time.time() + 1, 10)
    now = time.time()
    await store.record_outcomes(
        [
            Outcome(due[0].delivery_id, "a", "delivered", 1, now, now, 0.02, 200),
            Outcome(due[1].delivery_id, "a", "dead", 1, now, now, 0.01, 400, "rejected"),
            Outcome(due[2].delivery_id, "a", "pending", 1, now + 60, now, 0.5, 503, "busy"),
        ]
    )
    await store.add_replays([(due[1].event["id"], "a"), (due[0].event["id"], "b")], now)
    for state, job_id in zip(("watching", "done", "failed", "expired"), "wxyz", strict=True):
        job = Job("rg", job_id, "watching", {"order": job_id}, now, now + 600, now + 5)
        await store.watch_job(job)
        if state != "watching":
            await store.save_jobs([Job("rg", job_id, state, {"o": 1}, now, now + 600, now, 2.5,
                                       3, 1, "gone", "why", now)])


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every copied column of every table, in key order."""
    out = {}
    for table in dbcopy.TABLES:
        sql = f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {', '.join(table.key)}"  # noqa: S608
        if url.startswith("sqlite:///"):  # SQL on purpose: the copy must keep every column
            with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
                out[table.name] = conn.execute(sql).fetchall()
        else:
            with psycopg.connect(url) as pg:
                out[table.name] = pg.execute(sql).fetchall()  # type: ignore[arg-type]
    return out


def make_source(tmp_path: Path) -> str:
    async def go() -> None:
        store = SqliteStore(str(tmp_path / "source.db"))
        await store.open()
        await fill(store)
        await store.close()

    asyncio.run(go())
    return f"sqlite:///{tmp_path / 'source.db'}"


def on_store(url: str, call: Callable[[PostgresStore], Awaitable[T]]) -> T:
    async def go() -> T:
        store = PostgresStore(url)
        await store.open()
        try:
            return await call(store)
        finally:
            await store.close()

    return asyncio.run(go())


def no_progress(table: str, done: int, total: int) -> None:
    pass


def test_sqlite_to_postgres_to_sqlite_keeps_every_row(
    tmp_path: Path, pg_empty: str  # noqa: F811
) -> None:
    source = make_source(tmp_path)
    back = f"sqlite:///{tmp_path / 'back.db'}"
    there = dbcopy.copy(source, pg_empty, no_progress, chunk=3)
    again = dbcopy.copy(pg_empty, back, no_progress, chunk=3)
    assert there.ok and again.ok
    original = dump(source)
    assert original["events"] and original["attempts"] and original["jobs"]
    assert len(original["events"]) == len(RAW_BODIES) + 1  # the duplicate is not a row
    assert {r[10] for r in original["events"]} >= set(RAW_BODIES)
    assert {r[3] for r in original["deliveries"]} == {"pending", "delivered", "dead"}
    assert {r[11] for r in original["deliveries"]} - {None}  # replay links
    assert {r[2] for r in original["jobs"]} == {"watching", "done", "failed", "expired"}
    assert dump(pg_empty) == original
    assert dump(back) == original


def test_new_rows_after_a_copy_get_fresh_ids_and_sort_after_the_copied(
    tmp_path: Path, pg_empty: str  # noqa: F811
) -> None:
    source = make_source(tmp_path)
    dbcopy.copy(source, pg_empty, no_progress)
    copied = max(r[0] for r in dump(source)["deliveries"])

    async def write_new(store: PostgresStore) -> tuple[dict[str, Any] | None, tuple[int, int]]:
        [stored] = await store.write_events([NewEvent(generation("new"), b"{}", {}, ("a",))])
        return await store.get_event(stored.event_id), await store.replay_horizon()

    event, (events_upto, deliveries_upto) = on_store(pg_empty, write_new)
    assert event is not None and event["deliveries"][0]["id"] == copied + 1
    assert deliveries_upto == copied + 1 and events_upto == len(RAW_BODIES) + 2


class Stop(Exception):
    pass


@pytest.mark.parametrize("direction", ["to_postgres", "to_sqlite"])
@pytest.mark.parametrize("stop_after", [1, 3, 6, 9, 11])  # chunks: in events … in jobs
def test_an_interrupted_copy_run_again_ends_the_same(
    tmp_path: Path, pg_empty: str, direction: str, stop_after: int  # noqa: F811
) -> None:
    source = make_source(tmp_path)
    if direction == "to_sqlite":
        dbcopy.copy(source, pg_empty, no_progress)
        source, target = pg_empty, f"sqlite:///{tmp_path / 'target.db'}"
    else:
        target = pg_empty
    chunks = 0

    def stop(table: str, done: int, total: int) -> None:
        nonlocal chunks
        chunks += 1
        if chunks == stop_after:
            raise Stop

    with pytest.raises(Stop):
        dbcopy.copy(source, target, stop, chunk=2)
    assert dump(target) != dump(source)
    rerun: list[str] = []
    assert dbcopy.copy(source, target, lambda table, *_: rerun.append(table), chunk=2).ok
    assert dump(target) == dump(source)
    # It continued where it stopped: only the chunks not yet copied were copied again.
    every_chunk = sum(-(-len(rows) // 2) for rows in dump(source).values())
    assert len(rerun) == every_chunk - stop_after


def test_the_cli_copies_and_reports_counts(
    tmp_path: Path, pg_empty: str, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    source = make_source(tmp_path)
    assert cli.main(["db", "copy", "--from", source, "--to", pg_empty]) == 0
    out, err = capsys.readouterr()
    assert "counts match" in out and "events" in out
    assert "rows" in err  # the progress on stderr
    assert cli.main(["db", "copy", "--from", source, "--to", pg_empty]) == 0  # nothing to do
    assert dump(pg_empty) == dump(source)


def test_a_target_with_other_events_is_refused(
    tmp_path: Path, pg_empty: str, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    source = make_source(tmp_path)

    async def other_event() -> None:
        other = SqliteStore(str(tmp_path / "other.db"))
        await other.open()
        await other.write_events([NewEvent(generation("elsewhere"), b"{}", {}, ())])
        await other.close()

    asyncio.run(other_event())
    assert cli.main(["db", "copy", "--from", f"sqlite:///{tmp_path / 'other.db'}",
                     "--to", pg_empty]) == 0  # fmt: skip
    capsys.readouterr()
    assert cli.main(["db", "copy", "--from", source, "--to", pg_empty]) == 2
    assert "copy into an empty database" in capsys.readouterr().err


def test_counts_that_differ_fail_the_copy(
    tmp_path: Path, pg_empty: str, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    source = make_source(tmp_path)
    on_store(pg_empty, lambda store: store.watch_job(Job("zz", "extra", "watching", {}, 1, 2, 1)))
    assert cli.main(["db", "copy", "--from", source, "--to", pg_empty, "--json"]) == 1
    assert '"ok": false' in capsys.readouterr().out


def test_urls_are_checked_and_expanded_without_showing_passwords(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"PW": "s3cret"}
    assert dbcopy.expand("postgresql://u:${PW}@h/db", "--to", env) == "postgresql://u:s3cret@h/db"
    assert cli.main(["db", "copy", "--from", "mysql://u:s3cret@h/db", "--to", "sqlite:///x"]) == 2
    err = capsys.readouterr().err
    assert "--from must be sqlite:///PATH or postgresql://" in err and "s3cret" not in err
    assert cli.main(["db", "copy", "--from", "sqlite:///a.db", "--to", "sqlite:///a.db"]) == 2
    assert "same database" in capsys.readouterr().err


def test_an_unreachable_target_stops_with_how_to_continue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = f"postgresql://u:s3cret@127.0.0.1:{port}/db"
    assert cli.main(["db", "copy", "--from", f"sqlite:///{tmp_path / 's.db'}", "--to", target]) == 1
    err = capsys.readouterr().err
    assert "run it again to continue" in err and "s3cret" not in err
