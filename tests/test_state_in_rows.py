"""State lives in rows: jobs registered by any process count everywhere, and exactly one
process polls (a leader lease), handed over when its holder dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from receiver import settings as settings_mod
from tests.fake_providers import FakeRendergrid
from tests.fakes import FakeSink
from tests.pg import pg_empty, pg_url  # noqa: F401  (fixtures)
from tests.support import Server, signed_headers
from tests.test_e2e_polling import config_text, delivered, rendergrid_source, wait_for, watch


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "receiver.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


def post_completed(server: Server, config: Path, job: str) -> httpx.Response:
    body = json.dumps({"event": "creation.completed", "id": job, "status": "completed",
                       "result_urls": [f"https://cdn.test/{job}.jpg"]}).encode()
    settings = settings_mod.load(str(config))
    return httpx.post(f"{server.url}/hooks/rendergrid", content=body,
                      headers=signed_headers(settings, "rendergrid", body))


def test_a_job_registered_by_the_cli_and_one_by_the_api_behave_the_same(tmp_path: Path) -> None:
    """Both are watched while the server runs; each one's terminal webhook carries its
    registration's metadata and ends the watch, so neither is polled afterwards."""
    with FakeSink() as sink, FakeRendergrid() as fake:
        text = config_text(tmp_path, sink, rendergrid_source(fake).replace(
            "fallback_poll_after_s = 0", "fallback_poll_after_s = 3600"))
        config = tmp_path / "hookyard.toml"
        config.write_text(text)
        server = Server(config, tmp_path).start()
        try:
            done = cli(config, "jobs", "watch", "--source", "rendergrid", "--job-id", "by-cli",
                       "--metadata", '{"via": "cli"}')
            assert done.returncode == 0, done.stderr
            watch(server, "rendergrid", "by-api", metadata={"via": "api"})
            for job in ("by-cli", "by-api"):
                assert post_completed(server, config, job).status_code == 200
            wait_for(lambda: len(sink.requests) == 2)
            listed = cli(config, "jobs", "list", "--json")
        finally:
            server.kill()
        polls = fake.status_requests("by-cli") + fake.status_requests("by-api")
    metadata = {e["job_id"]: e["metadata"] for e in delivered(sink)}
    assert metadata == {"by-cli": {"via": "cli"}, "by-api": {"via": "api"}}
    states = {j["job_id"]: j["state"] for j in json.loads(listed.stdout)}
    assert states == {"by-cli": "done", "by-api": "done"} and polls == []


def leaders(*processes: Server) -> list[Server]:
    return [p for p in processes if '"poller.leading"' in p.output()]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_replicas_share_the_work_and_one_polls_through_a_leader_death(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Two `hookyard serve` processes on one database, as two machines behind a balancer:
    webhooks go to both, a redelivery to the other one is the same event, exactly one of them
    polls; SIGKILL of that one mid-stream loses nothing acknowledged, every stored event
    reaches the sink, the other takes polling over within the lease, and Rendergrid's 5 s per
    creation (and its 120/min key budget) holds across the handover."""
    with FakeSink() as sink, FakeRendergrid() as fake:
        fake.set_job("c1", state="completed", outputs=["https://cdn.test/c1.jpg"],
                     running_polls=1)
        text = config_text(tmp_path, sink, rendergrid_source(fake))
        if backend == "postgres":
            url = request.getfixturevalue("pg_empty")
            text = text.replace(f'"sqlite:///{tmp_path}/hookyard.db"', f'"{url}"')
        config = tmp_path / "hookyard.toml"
        config.write_text(text)
        one = Server(config, tmp_path).start()
        two = Server(config, tmp_path).start()
        acked: list[str] = []
        try:
            wait_for(lambda: len(leaders(one, two)) == 1, timeout=30)
            [first] = leaders(one, two)
            other = two if first is one else one
            watch(other, "rendergrid", "c1")
            wait_for(lambda: len(fake.status_requests("c1")) >= 1, timeout=30)
            for i in range(20):
                if i == 10 and first.proc is not None:
                    os.kill(first.proc.pid, signal.SIGKILL)  # mid-stream
                target = (one, two)[i % 2]
                if target is first and i >= 10:
                    target = other
                r = post_completed(target, config, f"job-{i}")
                assert r.status_code == 200
                acked.append(r.json()["event_id"])
                again = post_completed(other, config, f"job-{i}")
                assert again.json() == {"event_id": acked[-1], "duplicate": True}
            wait_for(lambda: '"poller.leading"' in other.output(), timeout=40)
            wait_for(lambda: any(e["job_id"] == "c1" for e in delivered(sink)), timeout=120)
            wait_for(lambda: {e["id"] for e in delivered(sink)} >= set(acked), timeout=60)
        finally:
            one.kill()
            two.kill()
        times = [r.at for r in fake.status_requests("c1")]
        statuses = [status for _, status in fake.exchanges]
    assert len(times) == 2 and 429 not in statuses
    assert times[1] - times[0] >= 5.0
    assert '"took_over":true' in other.output()
    assert [e["via"] for e in delivered(sink) if e["job_id"] == "c1"] == ["poll"]
