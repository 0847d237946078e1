"""A sink outage: 5xx, then connection refused, then back. Nothing is lost; what ran out of
attempts is dead, and a replay of the dead deliveries brings every event exactly once more."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from receiver import settings as settings_mod
from receiver.store import Store
from tests.fakes import FakeSink, Reply
from tests.support import (
    RENDERGRID_SECRET,
    Server,
    post_signed,
    read_store,
    status_counts,
    wait_for,
)

TOKEN = "outage-admin-token-0123456789"


def refused(db: Path, event_ids: list[str]) -> int:
    """Attempts on these events that found the sink's port closed."""

    async def count(store: Store) -> int:
        errors = []
        for event_id in event_ids:
            event = await store.get_event(event_id)
            assert event is not None, event_id
            errors += [a["error"] or "" for d in event["deliveries"] for a in d["attempt_log"]]
        return sum(bool(re.search("Connect.*Error", e)) for e in errors)

    return read_store(db, count)


def test_sink_outage_then_recovery_then_replay_of_the_dead(tmp_path: Path) -> None:
    down = FakeSink(default=Reply(503, "maintenance")).start()
    port = down.port
    config_path = tmp_path / "hookyard.toml"
    config_path.write_text(f"""
[server]
database = "sqlite:///{tmp_path}/hookyard.db"
admin_token = "{TOKEN}"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["{RENDERGRID_SECRET}"]

[sinks.backend]
type = "http"
url = "http://127.0.0.1:{port}/events"
retry_schedule_s = [0.2]
max_attempts = 2
concurrency = 1

[[routes]]
sources = ["*"]
types = ["*"]
sinks = ["backend"]
""")
    config = settings_mod.load(str(config_path))
    db = tmp_path / "hookyard.db"
    server = Server(config_path, tmp_path).start()

    def send(i: int) -> str:
        body = json.dumps({"id": f"job-{i}", "status": "completed", "result_urls": []}).encode()
        r = post_signed(server.url, config, body)
        assert r.status_code == 200  # the intake never depends on a sink
        return str(r.json()["event_id"])

    try:
        # 5xx phase: two events use up both attempts (4 failures, under the breaker's 5).
        ids = [send(0), send(1)]
        wait_for(lambda: status_counts(db).get("dead", 0) == 2, timeout=30)
        down.stop()  # connection refused phase: new events fail, the breaker opens
        ids += [send(i) for i in range(2, 8)]
        # the fifth failure in a row opened the breaker
        wait_for(lambda: refused(db, ids) >= 1, timeout=30)
        up = FakeSink(port=port).start()  # the sink is back, same address
        try:
            # The breaker's next probe succeeds; everything still pending arrives.
            wait_for(lambda: status_counts(db).get("pending", 0) == 0, timeout=60)
            dead = status_counts(db).get("dead", 0)
            arrived = {r.headers["webhook-id"] for r in up.requests}
            replay = httpx.post(f"{server.url}/v1/replay", json={"delivery_status": "dead"},
                                headers={"Authorization": f"Bearer {TOKEN}"})
            wait_for(lambda: status_counts(db).get("pending", 0) == 0
                     and len(up.requests) >= len(ids), timeout=60)
            # No row is pending, and a row stays pending until its send is answered: the sink
            # has had every request it will get.
            final = [r.headers["webhook-id"] for r in up.requests]
        finally:
            up.stop()
    finally:
        server.kill()
    assert replay.status_code == 202 and replay.json()["deliveries"] == dead
    assert dead >= 2, "the outage should outlast some events' attempts"
    assert sorted(final) == sorted(ids)  # every event exactly once after the outage
    assert set(final) - arrived == {i for i in ids if i not in arrived}
