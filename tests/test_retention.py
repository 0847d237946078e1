"""Retention (issue 13, part 1): old events leave the store with their rows, on both backends.

The store methods run on SQLite and PostgreSQL through test_store_backends' `make_store`
fixture; the pruner runs in an app's worker role; `hookyard prune` runs as a user would.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver import cli
from receiver import settings as settings_mod
from receiver.core import events
from receiver.core.errors import ConfigError
from receiver.core.outputs import MirroredOutput
from receiver.retention import prune_pass
from receiver.store import EventFilter, Job, NewEvent, Outcome, Pruned, Store, age_bound, open_store
from receiver.store.sqlite import SqliteStore
from tests.pg import pg_empty, pg_url  # noqa: F401  (fixtures)
from tests.support import BASE_CONFIG, app_client, write_config
from tests.test_store_backends import Factory, backend, make_store  # noqa: F401  (fixtures)

DAY = 86400.0


@pytest.fixture
async def store(make_store: Factory) -> Store:  # noqa: F811
    return await make_store()


def aged(job: str, days_old: float, source: str = "rg") -> events.Event:
    """A completed generation event received `days_old` days ago (id and received_at agree,
    as they do for every event hookyard stores)."""
    at = time.time() - days_old * DAY
    ev = events.generation_event(
        source=source, provider="rendergrid", job_id=job, status="completed", via="webhook",
        raw={"id": job}, outputs=["https://cdn.example/x.png"],
    )
    ev.id = events.new_event_id(now_ms=int(at * 1000))
    ev.received_at = age_bound(at)[1]
    return ev


def new(ev: events.Event, sinks: tuple[str, ...] = ("a",)) -> NewEvent:
    return NewEvent(ev, b'{"id": "x"}' + b" " * 2000, {"content-type": "application/json"}, sinks)


async def settle(store: Store, sink: str, status: str, mirrored: int = 0) -> None:
    """Send every due row of `sink` once, ending in `status`."""
    now = time.time()
    for due in await store.claim_due(sink, now + 1, 1000):
        mirrors = tuple(
            MirroredOutput(i, "bucket", f"k/{due.delivery_id}/{i}", "image/png")
            for i in range(mirrored)
        )
        await store.record_outcomes(
            [Outcome(due.delivery_id, sink, status, 1, now, now, 0.01, 200, None, mirrors)]
        )


async def event_ids(store: Store) -> set[str]:
    return {e["id"] for e in await store.list_events(EventFilter(), limit=500)}


# -- the store, both backends ---------------------------------------------------------------


async def test_old_settled_events_go_with_every_row_and_the_rest_stay(store: Store) -> None:
    """Old + delivered and old + dead go with their deliveries, attempts and mirror records; an
    old event with a pending delivery, a recent one, and an old one replayed since stay."""
    done, dead, pending, recent, replayed = await store.write_events(
        [new(aged("done", 100), ("a", "m")), new(aged("dead", 100)), new(aged("pend", 100)),
         new(aged("recent", 10)), new(aged("again", 100))]
    )
    await settle(store, "m", "delivered", mirrored=2)
    claimed = await store.claim_due("a", time.time() + 1, 100)
    now = time.time()
    await store.record_outcomes(
        [Outcome(d.delivery_id, "a", "dead" if d.event["id"] == dead.event_id else "delivered",
                 1, now, now, 0.01)
         for d in claimed if d.event["id"] != pending.event_id]
    )
    await store.release([d.delivery_id for d in claimed])  # the pending one stays pending
    await store.add_replays([(replayed.event_id, "a")], time.time())  # pending again

    plan = await prune_pass(store, time.time() - 90 * DAY, dry_run=True)
    pruned = await prune_pass(store, time.time() - 90 * DAY)

    assert pruned == plan  # a dry run counts exactly what the pass then removes
    assert pruned == Pruned(events=2, deliveries=3, attempts=3, mirrors=2)
    assert await event_ids(store) == {pending.event_id, recent.event_id, replayed.event_id}
    assert await store.get_event(done.event_id) is None
    assert sum((await store.delivery_counts()).values()) == 4  # pend, recent, again x2


async def test_a_dry_run_removes_nothing(store: Store) -> None:
    [old] = await store.write_events([new(aged("old", 200), ())])
    plan = await prune_pass(store, time.time() - 90 * DAY, dry_run=True)
    assert plan.events == 1
    assert await store.get_event(old.event_id) is not None


async def test_a_pass_walks_in_batches_and_misses_none(store: Store) -> None:
    """Batches of 3 over 10 old events between pending ones: every settled one goes, each
    batch is its own step (the pruner's yield points)."""
    written = await store.write_events(
        [new(aged(f"j{i}", 95), ("a",) if i % 4 == 0 else ()) for i in range(10)]
    )
    steps: list[Pruned] = []
    pruned = await prune_pass(store, time.time() - 90 * DAY, batch=3, progress=steps.append)
    keep = {r.event_id for i, r in enumerate(written) if i % 4 == 0}  # pending deliveries
    assert pruned.events == 7 and len([s for s in steps if s.events]) >= 3
    assert await event_ids(store) == keep


async def test_ended_jobs_go_after_the_same_age_and_watched_ones_stay(store: Store) -> None:
    now = time.time()

    def job(name: str, state: str, updated: float) -> Job:
        return Job("rg", name, state, {}, updated, updated + 60, updated, updated_at=updated)

    for name, state, days in [("old-done", "done", 100), ("old-failed", "failed", 100),
                              ("old-expired", "expired", 100), ("old-watching", "watching", 100),
                              ("new-done", "done", 1)]:
        await store.watch_job(job(name, state, now - days * DAY))
    assert await store.prune_jobs(now - 90 * DAY, 100, dry_run=True) == 3
    pruned = await prune_pass(store, now - 90 * DAY, batch=2)
    assert pruned.jobs == 3
    left = {j.job_id for j in await store.list_jobs()}
    assert left == {"old-watching", "new-done"}


async def test_a_dry_run_counts_every_ended_job_not_only_a_batch(store: Store) -> None:
    """A dry run removes nothing, so it cannot page through ended jobs a batch at a time: it
    still counts them all (what `hookyard prune --dry-run` prints and asks about)."""
    old = time.time() - 100 * DAY
    for i in range(7):
        ended = Job("rg", f"ended-{i}", "done", {}, old, old + 60, old, updated_at=old)
        await store.watch_job(ended)
    plan = await prune_pass(store, time.time() - 90 * DAY, batch=3, dry_run=True)
    pruned = await prune_pass(store, time.time() - 90 * DAY, batch=3)
    assert plan.jobs == pruned.jobs == 7


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from([1, 89, 91, 400]),
                  st.sampled_from(["none", "pending", "delivered", "dead"])),
        max_size=12,
    ),
    batch=st.integers(1, 5),
)
async def test_what_stays_matches_a_model(
    store: Store, rows: list[tuple[int, str]], batch: int
) -> None:
    """Any mix of ages and delivery states, any batch size: exactly the events older than
    90 days without a pending delivery go."""
    sink = f"s{uuid.uuid4().hex[:8]}"  # each example its own sink on the shared store
    written = await store.write_events(
        [new(aged(f"{sink}-{i}", days), () if state == "none" else (sink,))
         for i, (days, state) in enumerate(rows)]
    )
    by_id = {r.event_id: row for r, row in zip(written, rows, strict=True)}
    now = time.time()
    claimed = await store.claim_due(sink, now + 1, 100)
    await store.record_outcomes(
        [Outcome(d.delivery_id, sink, by_id[d.event["id"]][1], 1, now, now, 0.01)
         for d in claimed if by_id[d.event["id"]][1] != "pending"]
    )
    await store.release([d.delivery_id for d in claimed])
    await prune_pass(store, now - 90 * DAY, batch=batch, pause=False)
    left = await event_ids(store)
    for event_id, (days, state) in by_id.items():
        assert (event_id in left) == (days < 90 or state == "pending"), (days, state)


async def test_sqlite_gives_the_space_back_to_the_os(tmp_path: Path) -> None:
    """A new file is created with incremental auto-vacuum, so pruning shrinks it."""
    path = tmp_path / "big.db"
    store = SqliteStore(str(path))
    await store.open()
    try:
        for k in range(4):
            await store.write_events([new(aged(f"b{k}-{i}", 120), ()) for i in range(500)])
        before = await store.database_size()
        pruned = await prune_pass(store, time.time() - 90 * DAY)
        after = await store.database_size()
    finally:
        await store.close()
    assert pruned.events == 2000
    assert after < before / 3, (before, after)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # INCREMENTAL
    assert path.stat().st_size < before / 3


async def test_deleting_a_delivery_finds_its_replays_through_an_index(
    store: Store, backend: str, tmp_path: Path, request: pytest.FixtureRequest,  # noqa: F811
) -> None:
    """The foreign key replay_of → deliveries(id) is checked for every deleted delivery; without
    an index each check scans all deliveries (bench: 0.66 s per batch of 500 at 20k events)."""
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "store.db") as db:
            plan = db.execute("EXPLAIN QUERY PLAN SELECT 1 FROM deliveries WHERE replay_of = 7")
            assert "INDEX deliveries_replay_of" in str(plan.fetchall())
    else:
        import psycopg

        with psycopg.connect(request.getfixturevalue("pg_empty")) as conn:
            conn.execute("SET enable_seqscan = off")
            plan = conn.execute("EXPLAIN SELECT 1 FROM deliveries WHERE replay_of = 7")
            assert "deliveries_replay_of" in str(plan.fetchall())


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("90d", 90 * DAY), ("12h", 43200.0), ("30m", 1800.0), ("3600s", 3600.0), ("0", None)],
)
def test_max_age_takes_a_number_and_a_unit(tmp_path: Path, value: str, seconds: float) -> None:
    text = f'[server]\ndatabase = "sqlite:///{tmp_path}/h.db"\n[retention]\nmax_age = "{value}"\n'
    path = tmp_path / "h.toml"
    path.write_text(text)
    assert settings_mod.load(str(path)).retention.max_age_s == seconds


def test_max_age_defaults_to_90_days(tmp_path: Path) -> None:
    assert settings_mod.load(str(write_config(tmp_path))).retention.max_age_s == 90 * DAY


@pytest.mark.parametrize("value", ['"90"', '"-1d"', '"1w"', "90", '"0d"', '""', '"1.5d"'])
def test_a_bad_max_age_says_what_to_write(tmp_path: Path, value: str) -> None:
    path = tmp_path / "h.toml"
    path.write_text(f"[retention]\nmax_age = {value}\n")
    with pytest.raises(ConfigError, match=r"\[retention\] max_age must be .*\"90d\""):
        settings_mod.load(str(path))


def test_an_unknown_retention_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text('[retention]\nmax_agee = "1d"\n')
    with pytest.raises(ConfigError, match='did you mean "max_age"'):
        settings_mod.load(str(path))


# -- the pruner in the worker role, and the CLI ---------------------------------------------


@pytest.fixture
def configured(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path  # noqa: F811
) -> Path:
    """The base config, its database on this backend (a new SQLite file, or the emptied
    PostgreSQL test database)."""
    if backend == "sqlite":
        return write_config(tmp_path)
    url = request.getfixturevalue("pg_empty")
    return write_config(tmp_path, BASE_CONFIG.replace('"sqlite:///{db}"', f'"{url}"'))


async def seed(config_path: Path, *aged_events: events.Event) -> list[str]:
    store = open_store(settings_mod.load(str(config_path)).server.database)
    await store.open()
    try:
        return [s.event_id for s in await store.write_events([new(e, ()) for e in aged_events])]
    finally:
        await store.close()


async def stored_ids(config_path: Path) -> set[str]:
    store = open_store(settings_mod.load(str(config_path)).server.database)
    await store.open()
    try:
        return await event_ids(store)
    finally:
        await store.close()


async def test_the_worker_prunes_and_reports_it_in_metrics(configured: Path) -> None:
    path = configured
    path.write_text(path.read_text() + '\n[retention]\nmax_age = "30d"\n')
    old, recent = await seed(path, aged("old", 31), aged("recent", 29))
    config = settings_mod.load(str(path))
    async with app_client(config) as (client, service):
        assert service.pruner is not None
        deadline = time.monotonic() + 20
        while service.pruner.passes < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert await service.store.get_event(old) is None
        assert await service.store.get_event(recent) is not None
        text = (await client.get("/metrics")).text
    assert 'hookyard_pruned_rows_total{table="events"} 1.0' in text
    size = [line for line in text.splitlines() if line.startswith("hookyard_database_bytes ")]
    assert size and float(size[0].split()[1]) > 0


@pytest.mark.parametrize("worker", [True, False])
async def test_only_the_worker_role_prunes(tmp_path: Path, worker: bool) -> None:
    """`serve --no-worker` web processes take webhooks only; the pruner runs where delivery
    does (`serve`, `worker`)."""
    from receiver.app import create_app

    app = create_app(settings_mod.load(str(write_config(tmp_path))), worker=worker)
    async with app.state.hookyard.lifespan(None):
        running = {task.get_name() for task in asyncio.all_tasks()}
    assert ("hookyard-retention" in running) is worker


def test_max_age_0_starts_no_pruner(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text() + '\n[retention]\nmax_age = "0"\n')
    from receiver.app import Hookyard

    assert Hookyard(settings_mod.load(str(path))).pruner is None


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_prune_counts_asks_and_removes(
    configured: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = configured
    _, recent = asyncio.run(seed(path, aged("old", 40), aged("recent", 5)))
    base = ["prune", "--config", str(path), "--older-than", "30d"]

    code, out, _ = run_cli([*base, "--dry-run"], monkeypatch, capsys)
    assert code == 0 and "would remove 1 events older than 30d" in out

    code, _, err = run_cli(base, monkeypatch, capsys)  # no terminal, no --yes: refused
    assert code == 1 and "pass --yes" in err

    code, out, _ = run_cli([*base, "--yes", "--json"], monkeypatch, capsys)
    assert code == 0
    report = json.loads(out)
    assert report["events"] == 1 and report["dry_run"] is False and report["database_bytes"] > 0
    assert asyncio.run(stored_ids(path)) == {recent}


def test_prune_asks_on_a_terminal_and_a_no_removes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    asyncio.run(seed(path, aged("old", 40)))

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert cli.main(["prune", "--config", str(path), "--older-than", "30d"]) == 1
    assert "remove 1 events older than 30d" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert cli.main(["prune", "--config", str(path), "--older-than", "30d"]) == 0
    assert "removed 1 events" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--older-than", "soon"], "--older-than must be"), ([], "keeps everything")],
)
def test_prune_refuses_what_it_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text() + '\n[retention]\nmax_age = "0"\n')
    assert cli.main(["prune", "--config", str(path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_metrics_names_are_documented() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in ("hookyard_pruned_rows_total", "hookyard_database_bytes"):
        assert name in readme



def test_check_says_what_retention_will_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    assert cli.main(["check", "--config", str(path)]) == 0
    assert "retention events older than 90d (and ended jobs) are pruned" in capsys.readouterr().out
    path.write_text(path.read_text() + '\n[retention]\nmax_age = "0"\n')
    assert cli.main(["check", "--config", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["retention"] == {"max_age": "0"}
