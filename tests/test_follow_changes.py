"""Following other processes' commits (receiver.app.Hookyard._follow_changes): every commit
to the file nudges the idle sink runners, which look (a read) and claim (a write transaction,
in the ingest writer's way) only when something is due for them."""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path
from typing import Any

import pytest

from receiver import settings as settings_mod
from receiver.core import events
from receiver.store import NewEvent
from receiver.store.sqlite import SqliteStore
from tests.support import App, wait_until


def new_event(n: int, sinks: tuple[str, ...]) -> NewEvent:
    ev = events.generation_event(source="rendergrid", provider="rendergrid", job_id=f"job-{n}",
                                 status="completed", via="webhook", raw={"id": f"job-{n}"})
    return NewEvent(ev, b"{}", {"content-type": "application/json"}, sinks)


async def test_commits_elsewhere_make_idle_runners_look_and_claim_only_what_is_due(
    app: App, config: settings_mod.Settings, tmp_path: Path
) -> None:
    _, service = app
    looks: collections.Counter[str] = collections.Counter()
    claims: collections.Counter[str] = collections.Counter()
    store: Any = service.store
    next_due_at, claim_due = store.next_due_at, store.claim_due

    async def counted_look(sink: str, **kwargs: Any) -> Any:
        looks[sink] += 1
        return await next_due_at(sink, **kwargs)

    async def counted_claim(sink: str, *args: Any, **kwargs: Any) -> Any:
        claims[sink] += 1
        return await claim_due(sink, *args, **kwargs)

    store.next_due_at, store.claim_due = counted_look, counted_claim
    # Another connection to the file: what a web worker or the CLI in another process is.
    elsewhere = SqliteStore(config.server.database.removeprefix("sqlite:///"))
    await elsewhere.open()
    try:
        for n in range(10):  # events for no sink: nothing becomes due
            await elsewhere.write_events([new_event(n, ())])
            await asyncio.sleep(0.05)  # each commit seen on its own (a look every 15 ms)
        await wait_until(lambda: looks["other"] >= 5, what="idle runner looked")
        assert claims == {}  # looked each time, claimed never
        [stored] = await elsewhere.write_events([new_event(99, ("other",))])
    finally:
        await elsewhere.close()
    delivered = Path(f"{tmp_path / 'events.jsonl'}.other")
    lines: list[str] = []

    def arrived() -> bool:
        lines[:] = delivered.read_text().splitlines() if delivered.exists() else []
        return bool(lines)

    await wait_until(arrived, what="the row added elsewhere delivered")
    assert json.loads(lines[0])["id"] == stored.event_id
    assert claims["other"] >= 1 and claims["log"] == 0



async def _commit_for(seconds: float, commit: Any) -> tuple[int, float]:
    """Commit again and again for `seconds` (a few ms apart): how many, in how long."""
    loop = asyncio.get_running_loop()
    started, n = loop.time(), 0
    while loop.time() - started < seconds:
        await commit(n)
        n += 1
        await asyncio.sleep(0.003)
    return n, loop.time() - started


def counted_nudges(service: Any) -> list[float]:
    """The follower's nudges of the delivery loops, counted (they still nudge)."""
    nudges: list[float] = []
    nudge = service.delivery.nudge

    def counted() -> None:
        nudges.append(asyncio.get_running_loop().time())
        nudge()

    service.delivery.nudge = counted
    return nudges


async def test_a_stream_of_own_commits_is_followed_once_per_gap_and_misses_nothing(
    app: App, config: settings_mod.Settings, tmp_path: Path
) -> None:
    from receiver.app import NUDGE_GAP_S

    _, service = app
    nudges = counted_nudges(service)

    async def own(n: int) -> None:  # what webhooks to this process do
        ev = new_event(n, ()).event
        await service.ingest.submit(ev, b"{}", {"content-type": "application/json"})

    n, seconds = await _commit_for(1.0, own)
    assert n > 3 * seconds / NUDGE_GAP_S  # commits came much faster than the gap
    assert 3 <= len(nudges) <= seconds / NUDGE_GAP_S + 3
    # a row another process commits at the end of the stream is still found and sent
    elsewhere = SqliteStore(config.server.database.removeprefix("sqlite:///"))
    await elsewhere.open()
    try:
        [stored] = await elsewhere.write_events([new_event(10_000, ("other",))])
    finally:
        await elsewhere.close()
    delivered = Path(f"{tmp_path / 'events.jsonl'}.other")
    await wait_until(lambda: delivered.exists() and stored.event_id in delivered.read_text(),
                     what="the row committed after the stream delivered")


async def test_a_stream_of_other_processes_commits_is_followed_on_every_poll(
    app: App, config: settings_mod.Settings
) -> None:
    # A worker stores no events: every change is news to it, and is looked at at once.
    from receiver.app import NUDGE_GAP_S

    _, service = app
    nudges = counted_nudges(service)
    elsewhere = SqliteStore(config.server.database.removeprefix("sqlite:///"))
    await elsewhere.open()
    try:
        async def foreign(n: int) -> None:
            await elsewhere.write_events([new_event(n, ())])

        _, seconds = await _commit_for(1.0, foreign)
    finally:
        await elsewhere.close()
    assert len(nudges) > seconds / NUDGE_GAP_S + 3  # not held to one nudge per gap


class _Recorder:
    """Stands in for a module's structlog logger: records (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.lines.append((level, event, fields))


async def test_a_failing_nudge_is_logged_and_following_goes_on(
    app: App, config: settings_mod.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recorded on the module's logger itself: capture_logs() misses a logger that an earlier
    # test in this process configured with cache_logger_on_first_use.
    import receiver.app

    recorder = _Recorder()
    monkeypatch.setattr(receiver.app, "log", recorder)
    _, service = app
    nudges = counted_nudges(service)
    poller_nudge = service.poller.nudge
    failures = [RuntimeError("a bug in a loop's nudge")]

    def failing_once() -> None:
        if failures:
            raise failures.pop()
        poller_nudge()

    service.poller.nudge = failing_once  # type: ignore[method-assign]
    elsewhere = SqliteStore(config.server.database.removeprefix("sqlite:///"))
    await elsewhere.open()
    try:
        for n in range(3):
            await elsewhere.write_events([new_event(n, ())])
            await asyncio.sleep(0.05)
        await wait_until(lambda: not failures, what="the failing nudge ran")
        await asyncio.sleep(1.2)  # the follower's pause after a failure
        seen = len(nudges)
        await elsewhere.write_events([new_event(99, ())])
        await wait_until(lambda: len(nudges) > seen, what="a nudge after the failure")
    finally:
        await elsewhere.close()
    failed = [(level, f["error"]) for level, event, f in recorder.lines
              if event == "follower.failed"]
    assert failed == [("error", "RuntimeError(\"a bug in a loop's nudge\")")]
