"""Many processes, one SQLite file: `serve --workers N`, and `serve --no-worker` + `worker`."""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.fakes import FakeSink, Reply
from tests.support import RENDERGRID_SECRET, Server, Worker, post_signed, wait_for

CONFIG = """
[server]
database = "sqlite:///{tmp}/hookyard.db"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["{secret}"]

[sinks.hook]
type = "http"
url = "{sink}"
retry_schedule_s = [0.2]
max_attempts = 50

[[routes]]
sources = ["*"]
types = ["*"]
sinks = ["hook"]
"""


def write(tmp: Path, sink_url: str) -> Path:
    path = tmp / "hookyard.toml"
    path.write_text(CONFIG.format(tmp=tmp, secret=RENDERGRID_SECRET, sink=sink_url))
    return path


def creation(job: str) -> bytes:
    return json.dumps({"event": "creation.completed", "id": job, "status": "completed",
                       "result_urls": [], "cost": 0.1}).encode()


def post(url: str, config: Path, body: bytes) -> httpx.Response:
    return post_signed(url, config, body)


def delivered(sink: FakeSink) -> list[str]:
    return [r.headers["webhook-id"] for r in sink.requests]


def test_workers_2_spreads_webhooks_and_a_redelivery_anywhere_is_one_event(
    tmp_path: Path,
) -> None:
    with FakeSink() as sink:
        config = write(tmp_path, sink.url)
        server = Server(config, tmp_path, args=["--workers", "2"]).start(timeout=30)
        try:
            # The server answers as soon as one web process is up; the other may still be
            # starting (under load, long enough to miss every request below).
            wait_for(lambda: server.output().count("Application startup complete") >= 2,
                     timeout=30, what="both web processes started")
            jobs = [f"job-{i}" for i in range(40)]
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda j: post(server.url, config, creation(j)), jobs))
                again = list(pool.map(lambda j: post(server.url, config, creation(j)), jobs))
            assert all(r.status_code == 200 for r in answers + again)
            # Each web process numbers its requests behind its own random prefix.
            prefixes = {r.headers["x-request-id"][:8] for r in answers + again}
            assert len(prefixes) == 2, prefixes
            firsts = [r.json()["event_id"] for r in answers]
            assert [r.json() for r in again] == [
                {"event_id": e, "duplicate": True} for e in firsts
            ]
            wait_for(lambda: len(delivered(sink)) >= len(jobs), timeout=60, what="deliveries")
            assert sorted(delivered(sink)) == sorted(firsts)  # each once, from the worker
            # Each process adds its tallied webhooks to the shared files within a second
            # (metrics.FLUSH_S); a scrape of either then counts both processes' webhooks.
            new = 'hookyard_webhooks_total{outcome="new",reason="",source="rendergrid"} 40.0'
            wait_for(lambda: new in httpx.get(f"{server.url}/metrics").text, timeout=10,
                     what="both processes' webhooks in /metrics")
            metrics = httpx.get(f"{server.url}/metrics").text
            assert 'hookyard_deliveries_total{outcome="delivered",sink="hook"} 40.0' in metrics
        finally:
            assert server.stop() == 0
    assert "child.started" in server.output()


def test_a_killed_worker_is_restarted_by_the_supervisor(tmp_path: Path) -> None:
    with FakeSink() as sink:
        config = write(tmp_path, sink.url)
        server = Server(config, tmp_path, args=["--workers", "1"]).start(timeout=30)
        try:
            started = [json.loads(line) for line in server.output().splitlines()
                       if '"child.started"' in line]
            [worker] = [s for s in started if s["child"] == "worker"]
            os.kill(worker["pid"], signal.SIGKILL)
            wait_for(lambda: '"child.exited"' in server.output(), timeout=60, what="exit logged")
            r = post(server.url, config, creation("after-the-crash"))
            assert r.status_code == 200
            wait_for(lambda: delivered(sink) == [r.json()["event_id"]], timeout=60, what="delivery")
        finally:
            server.stop()


def test_web_and_worker_processes_lose_nothing_when_the_worker_is_killed(
    tmp_path: Path,
) -> None:
    """`serve --no-worker` takes webhooks; a separate `worker` delivers. SIGKILL of the worker
    mid-stream: every acknowledged event still arrives, at most the in-flight ones twice."""
    with FakeSink(Reply(200, "ok", delay_s=0.02)) as sink:
        config = write(tmp_path, sink.url)
        web = Server(config, tmp_path, args=["--no-worker"]).start(timeout=30)
        worker = Worker(config, tmp_path).start()
        acked: list[str] = []
        try:
            for i in range(60):
                r = post(web.url, config, creation(f"job-{i}"))
                assert r.status_code == 200
                acked.append(r.json()["event_id"])
                if i == 30:
                    worker.kill()  # mid-stream, with sends in flight
                    worker = Worker(config, tmp_path, name="worker-2").start()
            wait_for(lambda: set(delivered(sink)) >= set(acked), timeout=120,
                     what="every acknowledged event delivered")
            sent = delivered(sink)
            twice = [e for e in set(sent) if sent.count(e) > 1]
            assert len(twice) <= 4  # the sink's concurrency: what was in flight at the kill
        finally:
            worker.stop()
            web.stop()
