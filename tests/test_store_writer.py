"""The ingest writer process (receiver.store.sqlite.writer): `hookyard serve` commits event
batches in a child process. The store suite runs through it too (tests/test_store_backends.py,
backend "sqlite-process"); these tests are about the child itself: dying, errors, signals."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import os
import pickle
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from receiver.core import events
from receiver.core.errors import StoreUnavailable
from receiver.store import NewEvent
from receiver.store.rows import Batch, Written, from_plain, plain_item, prepare
from receiver.store.sqlite import SqliteStore
from receiver.store.sqlite.events import write_batch
from receiver.store.sqlite.writer import WriterProcess
from tests import support


def item(job: str) -> NewEvent:
    ev = events.generation_event(source="rg", provider="rendergrid", job_id=job,
                                 status="completed", via="webhook", raw={"id": job})
    return NewEvent(ev, b'{"id": "x"}', {"content-type": "application/json"}, ("a",))


def alive(pid: int) -> bool:
    """Running (a zombie no one reaped yet has exited: it counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def gone(pid: int) -> bool:
    """The child exited and was reaped (asyncio reaps it; waits up to 10 s)."""
    await support.wait_until(lambda: not alive(pid), timeout=10)
    return True


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "s.db"), writer_process=True)
    await s.open()
    yield s
    await s.close()


def child_pid(store: SqliteStore) -> int:
    assert store._writer_process is not None
    pid = store._writer_process.pid
    assert pid is not None and pid != os.getpid()
    return pid


async def test_batches_are_committed_by_a_child_process(store: SqliteStore) -> None:
    pid = child_pid(store)
    first = await store.write_events([item("j1"), item("j2")])
    again = await store.write_events([item("j1")])
    assert [s.duplicate for s in first] == [False, False]
    assert again[0].duplicate and again[0].event_id == first[0].event_id
    assert await store.count_events() == 2
    assert child_pid(store) == pid  # one child for every batch


async def test_a_child_killed_between_batches_is_replaced_without_failing_a_batch(
    store: SqliteStore,
) -> None:
    pid = child_pid(store)
    os.kill(pid, signal.SIGKILL)
    assert await gone(pid)
    [stored] = await store.write_events([item("j1")])
    assert not stored.duplicate
    assert child_pid(store) != pid
    assert await store.count_events() == 1


async def test_a_child_gone_before_the_loop_saw_its_end_is_replaced_too(
    store: SqliteStore,
) -> None:
    """The race CI met: the child was killed and reaped, but the event loop had not yet run
    since, so the socket's end was unseen when the next batch came. The batch's send fails
    (the frame never reached a child): a new child takes it."""
    pid = child_pid(store)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(pid):  # exited (reaped by asyncio's watcher thread, or a zombie)
        assert time.monotonic() < deadline, "the child did not die"
        time.sleep(0.01)  # noqa: ASYNC251 (on purpose: the loop must not see the end)
    assert store._writer_process is not None and not store._writer_process._reader.at_eof()
    [stored] = await store.write_events([item("j1")])
    assert not stored.duplicate and child_pid(store) != pid
    assert await store.count_events() == 1


async def test_a_child_killed_mid_batch_fails_that_batch_only(
    store: SqliteStore, tmp_path: Path
) -> None:
    pid = child_pid(store)
    # Hold the writers' lock so the child is stuck inside the batch, then kill it there.
    lock = os.open(str(tmp_path / "s.db-lock"), os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        writing = asyncio.create_task(store.write_events([item("j1")]))
        await asyncio.sleep(0.3)
        assert not writing.done()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(StoreUnavailable, match="writer process exited"):
            await asyncio.wait_for(writing, 10)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    [stored] = await store.write_events([item("j2")])
    assert not stored.duplicate and child_pid(store) != pid
    assert await store.count_events() == 1  # the killed batch was never committed


async def test_an_items_own_error_comes_back_as_the_thread_would_raise_it(
    store: SqliteStore, tmp_path: Path
) -> None:
    bad = item("j1")
    bad.event.type = None  # type: ignore[assignment]  # events.type is NOT NULL
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
        await store.write_events([bad])  # prepared and written in the child
    threaded = SqliteStore(str(tmp_path / "t.db"))
    await threaded.open()
    try:
        with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
            await threaded.write_events([bad])
    finally:
        await threaded.close()
    [stored] = await store.write_events([item("j1")])  # the child is still fine
    assert not stored.duplicate


def test_an_item_crosses_to_the_writer_process_as_it_was_but_its_parsed_payload() -> None:
    sent = NewEvent(
        events.generation_event(
            source="rg", provider="rendergrid", job_id="j1", status="failed", via="poll",
            raw={"id": "j1"}, outputs=["https://x/1.png"], error="nsfw", cost=0.25,
            model="m", metadata={"user": "u1"},
        ),
        b'{"id":"j1"}', {"content-type": "application/json"}, ("a", "b"),
    )
    got = from_plain(pickle.loads(pickle.dumps(plain_item(sent))))  # noqa: S301 (our own)
    assert got.event.raw is None  # the row keeps the bytes, not the parsed payload
    assert got == NewEvent(dataclasses.replace(sent.event, raw=None), sent.raw_body,
                           sent.headers, sent.sinks)


def refuse_job_x(conn: sqlite3.Connection, batch: Batch) -> Written:
    """A write function for the child: fails on batches holding job "x", else writes."""
    if any("rg:x:" in key for key in batch.keys):
        raise ValueError("job x is refused")
    return write_batch(conn, batch)


def temp_store_of_the_child(conn: sqlite3.Connection, _: object) -> int:
    """A write function for the child: where its connection keeps statement journals."""
    return int(conn.execute("PRAGMA temp_store").fetchone()[0])


async def test_the_child_keeps_statement_journals_in_memory(tmp_path: Path) -> None:
    # A batch's multi-row INSERT spilled its statement journal to a temporary file past
    # 64 KiB: opened, written and closed on every batch (strace: a third of the child's
    # pwrite calls). 2 = MEMORY.
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()  # makes the file and its schema
    writer = WriterProcess(str(tmp_path / "s.db"), 5000, temp_store_of_the_child)
    try:
        await writer.start()
        assert await writer.write(None) == 2
    finally:
        await writer.stop()
        await store.close()


async def test_an_error_of_the_write_is_the_batchs_and_the_child_stays(tmp_path: Path) -> None:
    writer = WriterProcess(str(tmp_path / "s.db"), 5000, refuse_job_x)
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        await writer.start()
        pid = writer.pid
        with pytest.raises(ValueError, match="job x is refused"):
            await writer.write(prepare([item("x")], time.time())[0])
        written = await writer.write(prepare([item("y")], time.time())[0])
        assert len(written.inserted) == 1 and writer.pid == pid
    finally:
        await writer.stop()
        await store.close()


async def test_the_child_ignores_sigterm_and_sigint_and_exits_when_the_store_closes(
    tmp_path: Path,
) -> None:
    store = SqliteStore(str(tmp_path / "s.db"), writer_process=True)
    await store.open()
    pid = child_pid(store)
    # systemd's stop and a terminal's Ctrl-C reach the whole group: the web process drains
    # its last batches through the child, so the child must outlive the signal.
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    await asyncio.sleep(0.2)
    [stored] = await store.write_events([item("j1")])
    assert not stored.duplicate and child_pid(store) == pid
    await store.close()
    assert not alive(pid)


async def test_a_file_the_child_cannot_open_is_a_store_outage(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"), writer_process=True)
    await store.open()
    try:
        assert store._writer_process is not None
        await store._writer_process.stop()
        store._writer_process.path = str(tmp_path / "missing" / "s.db")
        with pytest.raises(StoreUnavailable, match="unable to open"):
            await store.write_events([item("j1")])
    finally:
        await store.close()


def test_serve_commits_in_a_child_that_exits_when_serve_is_killed(tmp_path: Path) -> None:
    config = support.write_config(tmp_path)
    server = support.Server(config, tmp_path).start()
    try:
        response = support.post_signed(
            server.url, config, support.fixture("rendergrid", "completed.json")
        )
        assert response.status_code == 200, response.text
        started = [line for line in server.output().splitlines()
                   if "store.writer_started" in line]
        assert len(started) == 1, server.output()
        pid = int(started[0].split('"pid":')[1].split(",")[0])
        assert server.proc is not None and pid != server.proc.pid and alive(pid)
        server.kill()  # SIGKILL: no shutdown code runs in serve
        support.wait_for(lambda: not alive(pid), timeout=10)
    finally:
        server.kill()
    # What was answered 200 is in the file.
    assert support.read_store(tmp_path / "hookyard.db", lambda s: s.count_events()) == 1

