"""A sink removed from the config: its pending deliveries become dead letters when the delivery
role starts (`serve`, `worker`; not `serve --no-worker`), so they are replayable, pruned with
their events, and no longer counted as pending. The store's part runs on both backends in
tests/test_store_backends.py; here a real `hookyard serve` restarts without the sink.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from receiver import settings as settings_mod
from receiver.app import create_app
from receiver.core import events
from receiver.core.errors import Conflict
from receiver.delivery import Delivery
from receiver.store import NewEvent, Store, open_store
from tests.admin_kit import AUTH, TOKEN
from tests.fakes import FakeSink, Reply
from tests.pg import pg_empty, pg_url  # noqa: F401  (fixtures)
from tests.support import (
    RENDERGRID_SECRET,
    Server,
    app_client,
    post_signed,
    wait_for,
    wait_until,
)
from tests.test_store_backends import backend  # noqa: F401  (fixture)

T = TypeVar("T")

CONFIG = """
[server]
database = "{database}"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["{secret}"]

[sinks.a]
type = "http"
url = "{sink}/a"

[sinks.c]
type = "http"
url = "{sink}/c"
retry_schedule_s = [3600]
{b}
[[routes]]
sources = ["*"]
types = ["generation.completed"]
sinks = [{completed}]

[[routes]]
sources = ["*"]
types = ["generation.failed"]
sinks = ["c"]
"""
SINK_B = """
[sinks.b]
type = "http"
url = "{sink}/b"
retry_schedule_s = [3600]
"""
GONE = "sink b is no longer in the config"


@pytest.fixture
def database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:  # noqa: F811
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/hookyard.db"
    return str(request.getfixturevalue("pg_empty"))


def write(path: Path, database: str, sink: str, *, with_b: bool) -> Path:
    path.write_text(
        CONFIG.format(
            database=database,
            secret=RENDERGRID_SECRET,
            sink=sink,
            b=SINK_B.format(sink=sink) if with_b else "",
            completed='"a", "b"' if with_b else '"a"',
        )
    )
    return path


def ask(database: str, question: Callable[[Store], Awaitable[T]]) -> T:
    """One question to the store a running server also uses, through the store's API."""

    async def go() -> T:
        store = open_store(database)
        await store.open()
        try:
            return await question(store)
        finally:
            await store.close()

    return asyncio.run(go())


def rows(database: str) -> dict[int, dict[str, Any]]:
    return {d["id"]: d for d in ask(database, lambda s: s.list_deliveries(limit=500))}


def attempts_of(database: str, event_id: str, sink: str) -> list[tuple[Any, ...]]:
    event = ask(database, lambda s: s.get_event(event_id))
    assert event is not None
    [row] = [d for d in event["deliveries"] if d["sink"] == sink]
    return [(a["outcome"], a["status_code"], a["error"]) for a in row["attempt_log"]]


def hookyard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver.cli", *args], capture_output=True, text=True,
        timeout=60, check=False,
    )


def creation(job: str, status: str) -> bytes:
    return json.dumps({"event": f"creation.{status}", "id": job, "status": status,
                       "result_urls": [], "cost": 0.1}).encode()


def test_a_sink_removed_from_the_config_leaves_dead_letters_retention_can_prune(
    tmp_path: Path, database: str
) -> None:
    """Events stored for sinks a and b (b failing, so its rows wait to be retried), then the
    server restarts without b: b's rows are dead with the reason, a's and the still-configured
    c's are untouched, one warning says what to do, the pending gauge drops, `replay --dead
    --sink b` (with b back in the config) selects exactly them, and `prune` removes their
    events — which it would not while they were pending."""
    with FakeSink() as sink:
        sink.route("/a", Reply(200, "ok"))
        sink.route("/b", Reply(503, "down"))
        sink.route("/c", Reply(503, "down"))
        with_b = write(tmp_path / "with-b.toml", database, sink.url, with_b=True)
        without_b = write(tmp_path / "without-b.toml", database, sink.url, with_b=False)

        server = Server(with_b, tmp_path).start(timeout=30)
        try:
            completed = [
                post_signed(server.url, with_b, creation(f"job-{i}", "completed")).json()
                ["event_id"] for i in range(3)
            ]
            failed = post_signed(server.url, with_b, creation("job-f", "failed")).json()
            failed_id = failed["event_id"]

            def settled() -> bool:
                now = rows(database).values()
                return sorted((d["sink"], d["status"], d["attempts"]) for d in now) == [
                    *[("a", "delivered", 1)] * 3, *[("b", "pending", 1)] * 3, ("c", "pending", 1)
                ]

            wait_for(settled, timeout=30, what="a delivered, b and c failed once")
        finally:
            server.stop()
        before = rows(database)
        asked_b = len([r for r in sink.requests if r.path == "/b"])
        # While b's rows are pending, retention keeps their events, however old.
        plan = hookyard("prune", "--config", str(without_b), "--older-than", "1s", "--dry-run",
                        "--json")
        assert plan.returncode == 0, plan.stderr
        assert json.loads(plan.stdout)["events"] == 0

        server = Server(without_b, tmp_path).start(timeout=30)
        try:
            wait_for(lambda: '"delivery.sink_removed"' in server.output(), timeout=20,
                     what="the removed sink's warning")
            after = rows(database)
            metrics = httpx.get(f"{server.url}/metrics").text
        finally:
            server.stop()
        assert len([r for r in sink.requests if r.path == "/b"]) == asked_b

    for i, row in after.items():
        if before[i]["sink"] == "b":
            assert (row["status"], row["last_error"], row["last_status_code"], row["attempts"]) \
                == ("dead", GONE, None, 1)
        else:
            assert row == before[i]  # a delivered, c still pending with its 503
    assert {r["sink"] for r in after.values() if r["status"] == "dead"} == {"b"}
    assert attempts_of(database, completed[0], "b") == [
        ("pending", 503, f"POST {sink.url}/b answered 503: down"), ("dead", None, GONE)
    ]

    warnings = [json.loads(line) for line in server.output().splitlines()
                if '"delivery.sink_removed"' in line]
    [warning] = warnings  # one per removed sink
    assert (warning["sink"], warning["count"], warning["error"]) == ("b", 3, GONE)
    assert warning["level"] == "warning"
    assert "[sinks.b] back, restart, and run `hookyard replay --dead --sink b`" in warning["fix"]
    assert "`hookyard replay EVENT_ID --sink OTHER`" in warning["fix"]
    assert "\nhookyard_deliveries_pending 1.0" in metrics  # c's only
    assert 'hookyard_deliveries_total{outcome="dead",sink="b"} 3.0' in metrics

    # The advice works: the list names them, and with b back in the config a dead-letter
    # replay selects exactly them.
    listed = hookyard("deliveries", "list", "--config", str(without_b), "--status", "dead",
                      "--sink", "b", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(d["event_id"] for d in json.loads(listed.stdout)["items"]) == sorted(completed)
    replay = hookyard("replay", "--config", str(with_b), "--dead", "--sink", "b", "--dry-run",
                      "--json")
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout) == {"dry_run": True, "events": 3, "deliveries": 3}

    pruned = hookyard("prune", "--config", str(without_b), "--older-than", "1s", "--yes",
                      "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["events"] == 3
    left = ask(database, lambda s: s.count_events())
    assert left == 1 and ask(database, lambda s: s.get_event(failed_id)) is not None
    assert all(ask(database, lambda s, e=e: s.get_event(e)) is None for e in completed)


@pytest.mark.parametrize("worker", [True, False])
async def test_only_the_delivery_role_dead_letters_removed_sinks(
    tmp_path: Path, worker: bool
) -> None:
    """`serve` and `worker` make a removed sink's rows dead at start; a `serve --no-worker`
    web process (which runs no sink) leaves them to the worker."""
    config_path = write(tmp_path / "h.toml", f"sqlite:///{tmp_path}/h.db", "http://127.0.0.1:9",
                        with_b=False)
    config = settings_mod.load(str(config_path))
    store = await store_one_event(config, "failed", ("b", "old"))
    await store.close()

    app = create_app(config, worker=worker)
    service = app.state.hookyard  # type: ignore[attr-defined]

    async def all_dead() -> bool:
        counts = await service.store.delivery_counts()
        return bool(counts == {("b", "dead"): 1, ("old", "dead"): 1})

    async with service.lifespan(None):
        if worker:
            await wait_until(all_dead, what="the removed sinks' rows dead")
            assert service.delivery.removed == {"b": 1, "old": 1}
        else:
            running = {task.get_name() for task in asyncio.all_tasks()}
            assert "delivery-removed-sinks" not in running
    if not worker:
        store = open_store(config.server.database)
        await store.open()
        try:
            assert await store.delivery_counts() == {("b", "pending"): 1, ("old", "pending"): 1}
        finally:
            await store.close()



def test_the_warning_and_what_it_advises_are_in_the_readme() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("#### Removing a sink"):readme.index("### Polling")]
    for text in ("delivery.sink_removed", "sink NAME is no longer in the config",
                 "`hookyard replay --dead --sink NAME`", "`hookyard replay EVENT_ID --sink OTHER`",
                 "`hookyard deliveries list --status dead --sink NAME`", "not `serve --no-worker`"):
        assert text in section, text


async def test_a_retry_of_a_removed_sinks_row_is_refused_and_it_stays_dead(
    tmp_path: Path,
) -> None:
    """The admin API's and the UI's retry (Delivery.retry) would make such a row pending for
    no runner until the next start: it is refused, saying what to do, and stays dead; a
    configured sink's row goes through to the store's retry as before."""
    config = settings_mod.load(str(write(tmp_path / "c.toml", f"sqlite:///{tmp_path}/s.db",
                                         "http://127.0.0.1:9", with_b=False)))
    store = await store_one_event(config, "completed", ("a", "b"))
    try:
        await store.dead_letter_removed_sinks(config.sinks, 10, 0.0)
        ids = {d["sink"]: d["id"] for d in await store.list_deliveries()}
        delivery = Delivery(config.sinks, store)
        with pytest.raises(Conflict, match=r"sink 'b'.* no longer in the config.*replay"):
            await delivery.retry(ids["b"], 1.0)
        dead = await store.list_deliveries(status="dead")
        assert [(d["sink"], d["last_error"]) for d in dead] == [("b", GONE)]
        row, changed = await delivery.retry(ids["a"], 1.0)  # pending already: unchanged
        assert (row["sink"], changed) == ("a", False)
    finally:
        await store.close()


async def store_one_event(
    config: settings_mod.Settings, status: str, sinks: tuple[str, ...]
) -> Store:
    """The config's store, opened, holding one Rendergrid event routed to `sinks`."""
    store = open_store(config.server.database)
    await store.open()
    ev = events.generation_event(source="rendergrid", provider="rendergrid", job_id="j",
                                 status=status, via="webhook", raw={})
    await store.write_events([NewEvent(ev, b"{}", {}, sinks)])
    return store


async def test_the_ui_and_the_admin_api_answer_409_for_a_removed_sinks_row(
    tmp_path: Path,
) -> None:
    """Both routes that retry go through Delivery.retry: a 409 naming what to do, the row
    still dead afterwards."""
    path = write(tmp_path / "c.toml", f"sqlite:///{tmp_path}/s.db", "http://127.0.0.1:9",
                 with_b=False)
    path.write_text(path.read_text().replace("[server]\n", f'[server]\nadmin_token = "{TOKEN}"\n'))
    config = settings_mod.load(str(path))
    store = await store_one_event(config, "completed", ("a", "b"))
    try:
        await store.dead_letter_removed_sinks(config.sinks, 10, 0.0)
        [dead] = await store.list_deliveries(status="dead")
    finally:
        await store.close()
    assert dead["sink"] == "b"
    async with app_client(config) as (client, service):
        r = await client.post(f"/v1/deliveries/{dead['id']}/retry", headers=AUTH)
        assert r.status_code == 409 and "no longer in the config" in r.json()["message"]
        r = await client.post("/ui/login", data={"token": TOKEN})
        assert r.status_code == 303
        page = (await client.get(f"/ui/events/{dead['event_id']}")).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        r = await client.post(f"/ui/deliveries/{dead['id']}/retry", data={"csrf": csrf[1]})
        assert r.status_code == 409 and "no longer in the config" in r.text
        [still] = await service.store.list_deliveries(status="dead")
    assert (still["id"], still["last_error"]) == (dead["id"], GONE)
