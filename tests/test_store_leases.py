"""Delivery claims are leases in rows: several store instances (processes) on one SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from receiver import settings as settings_mod
from receiver.core import events
from receiver.store import NewEvent, Outcome, owner_is_dead
from receiver.store.sqlite import SqliteStore
from tests.fakes import FakeSink
from tests.support import BASE_CONFIG, app_client, write_config


def new_item(job: str) -> NewEvent:
    event = events.generation_event(source="rg", provider="rendergrid", job_id=job,
                                    status="completed", via="webhook", raw={"id": job})
    return NewEvent(event, b'{"id": "x"}', {}, ("a",))


@contextlib.asynccontextmanager
async def opened(path: Path, owner: str, lease_s: float = 60.0) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(str(path), owner=owner, lease_s=lease_s)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def outcome(delivery_id: int, status: str = "delivered") -> Outcome:
    now = time.time()
    return Outcome(delivery_id, "a", status, 1, now, now, 0.01, 200)


async def test_a_leased_row_is_not_claimed_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with opened(path, "host:1:a") as one, opened(path, "host:2:b") as two:
        await one.write_events([new_item(f"j{i}") for i in range(5)])
        mine = await one.claim_due("a", time.time(), 3)
        theirs = await two.claim_due("a", time.time(), 10)
        assert len(mine) == 3 and len(theirs) == 2
        assert not {d.delivery_id for d in mine} & {d.delivery_id for d in theirs}
        assert await two.claim_due("a", time.time(), 10) == []


async def test_an_ended_lease_is_claimed_again_without_counting_an_attempt(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with opened(path, "host:1:a", lease_s=0.2) as one, opened(path, "host:2:b") as two:
        await one.write_events([new_item("j")])
        [first] = await one.claim_due("a", time.time(), 1)
        assert await two.claim_due("a", time.time(), 1) == []
        later = first.lease_until + 0.01
        [again] = await two.claim_due("a", later, 1)
        assert again.delivery_id == first.delivery_id
        assert again.attempts == first.attempts == 0


async def test_a_stale_owner_cannot_overwrite_the_new_holder(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with opened(path, "host:1:a", lease_s=0.2) as one, opened(path, "host:2:b") as two:
        await one.write_events([new_item("j")])
        [stale] = await one.claim_due("a", time.time(), 1)
        [fresh] = await two.claim_due("a", stale.lease_until + 0.01, 1)
        await one.record_outcomes([outcome(stale.delivery_id, "dead")])
        assert await one.renew([stale.delivery_id], time.time() + 60) == 0
        await two.record_outcomes([outcome(fresh.delivery_id, "delivered")])
        event = await two.get_event(fresh.event["id"])
        assert event is not None
        [delivery] = event["deliveries"]
        assert delivery["status"] == "delivered"
        assert len(delivery["attempt_log"]) == 2  # both attempts happened and are logged


async def test_release_gives_rows_back_and_renew_extends_only_our_own(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with opened(path, "host:1:a") as one, opened(path, "host:2:b") as two:
        await one.write_events([new_item("j1"), new_item("j2")])
        claimed = await one.claim_due("a", time.time(), 2)
        ids = [d.delivery_id for d in claimed]
        assert await two.renew(ids, time.time() + 600) == 0
        assert await one.renew(ids, time.time() + 600) == 2
        await one.release(ids[:1])
        [back] = await two.claim_due("a", time.time(), 5)
        assert back.delivery_id == ids[0]


async def test_a_restart_on_this_host_ends_a_dead_process_leases_at_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    dead_pid = 2**22 + 12345  # above the default pid_max: no such process
    dead = f"{socket.gethostname()}:{dead_pid}:x"
    assert owner_is_dead(dead)
    assert not owner_is_dead(f"{socket.gethostname()}:{os.getpid()}:y")
    assert not owner_is_dead(f"another-host:{dead_pid}:z")  # not ours to judge: wait it out
    async with opened(path, dead) as crashed:
        await crashed.write_events([new_item("j")])
        assert len(await crashed.claim_due("a", time.time(), 1)) == 1
    async with opened(path, "host:2:b") as restarted:
        assert len(await restarted.claim_due("a", time.time(), 1)) == 1


async def test_wait_for_change_hears_a_commit_from_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with opened(path, "host:1:a") as watcher, opened(path, "host:2:b") as writer:
        assert await watcher.wait_for_change(0.05) is False  # nothing committed yet
        waiting = asyncio.create_task(watcher.wait_for_change(30.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await writer.write_events([new_item("j")])
        assert await asyncio.wait_for(waiting, 5.0) is True


async def test_a_running_service_sends_rows_another_process_added(tmp_path: Path) -> None:
    """The idle re-check is turned off: only the change follower can wake the runner."""
    with FakeSink() as sink:
        http_config = write_config(tmp_path, BASE_CONFIG + f"""
[sinks.hook]
type = "http"
url = "{sink.url}"
""")
        config = settings_mod.load(str(http_config))
        async with app_client(config) as (_, service):
            for runner in service.delivery.runners.values():
                runner.loop.recheck_s = 3600.0
            async with opened(tmp_path / "hookyard.db", "cli:1:c") as cli:
                [stored] = await cli.write_events([new_item("from-the-cli")])
                await cli.add_replays([(stored.event_id, "hook")], time.time())
            for _ in range(200):
                if sink.requests:
                    break
                await asyncio.sleep(0.05)
            assert [r.json()["id"] for r in sink.requests] == [stored.event_id]


async def test_a_due_loop_outlives_a_store_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """H5 found runners that ended for good on one failed claim; the loop backs off instead."""
    from receiver.core.dueloop import DueLoop
    from receiver.core.errors import StoreUnavailable

    calls: list[int] = []

    async def claim() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise StoreUnavailable("the SQLite store failed: disk I/O error")
        return 0

    async def idle_wait() -> float | None:
        return 0.0

    monkeypatch.setattr("receiver.core.dueloop.FIRST_PAUSE_S", 0.01)
    loop = DueLoop(claim, idle_wait, recheck_s=0.01)
    task = asyncio.create_task(loop.run())
    for _ in range(500):
        if len(calls) >= 4:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert len(calls) >= 4  # it went on claiming after two failures


async def test_rows_claimed_ahead_are_rechecked_and_given_back(tmp_path: Path) -> None:
    """A runner claims a batch ahead of its free slots. A row whose lease ran out while it
    waited is not sent if another worker took it; a paused sink gives its rows back."""
    import random

    from receiver.delivery import Breaker, Outcomes, SinkRunner
    from receiver.metrics import Metrics
    from receiver.settings import SinkSettings

    class Never:
        async def send(self, event: object) -> int:
            raise AssertionError("not in this test")

        async def aclose(self) -> None:
            return None

    path = tmp_path / "s.db"
    async with opened(path, "host:1:a", lease_s=60) as mine, opened(path, "host:2:b") as theirs:
        await mine.write_events([new_item(f"j{i}") for i in range(3)])
        runner = SinkRunner(SinkSettings(name="a", type="http", options={}), Never(), mine,
                            Outcomes(mine, Metrics()), Breaker(), random.Random(1))
        ahead = await mine.claim_due("a", time.time(), 3, lease_s=0.01)
        runner._ahead.extend(ahead)
        later = time.time() + 1
        [taken] = await theirs.claim_due("a", later, 1)  # the first one's lease ran out
        assert taken.delivery_id == ahead[0].delivery_id
        assert await runner._still_ours(ahead[0]) is None  # theirs now: not sent twice
        renewed = await runner._still_ours(ahead[1])  # renewed: still ours, for longer
        assert renewed is not None and renewed.lease_until > time.time() + 30
        assert await runner._still_ours(renewed) is renewed  # a live lease: no renewal
        await runner._give_back_ahead()  # the sink paused: the rest go back to the queue
        back = await theirs.claim_due("a", later + 1, 5)
        assert {d.delivery_id for d in back} == {ahead[1].delivery_id, ahead[2].delivery_id}


async def test_a_send_renews_its_lease_only_when_the_lease_would_not_cover_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ordinary send fits the lease it was claimed with: renewing it anyway would be a
    write transaction per delivery (a round trip each on PostgreSQL)."""
    import random

    from receiver.delivery import Breaker, Outcomes, SinkRunner
    from receiver.metrics import Metrics
    from receiver.settings import SinkSettings

    sent: list[str] = []

    class Quick:
        async def send(self, event: dict[str, object]) -> int:
            sent.append(str(event["id"]))
            return 200

        async def aclose(self) -> None:
            return None

    async with opened(tmp_path / "s.db", "host:1:a") as store:
        renewals: list[float] = []
        renew = store.renew

        async def counted(ids: list[int], until: float) -> int:
            renewals.append(until)
            return await renew(ids, until)

        monkeypatch.setattr(store, "renew", counted)
        await store.write_events([new_item(f"j{i}") for i in range(2)])
        settings = SinkSettings(name="a", type="http", options={})
        outcomes = Outcomes(store, Metrics())
        runner = SinkRunner(settings, Quick(), store, outcomes, Breaker(), random.Random(1))
        [ordinary] = await store.claim_due("a", time.time(), 1, lease_s=runner.lease_s)
        await runner._deliver(ordinary)
        assert len(sent) == 1 and renewals == []
        [short] = await store.claim_due("a", time.time(), 1, lease_s=5)  # shorter than a send
        await runner._deliver(short)
        assert len(sent) == 2 and len(renewals) == 1
        assert renewals[0] >= time.time() + settings.timeout_s
        await outcomes.writer.drain()
