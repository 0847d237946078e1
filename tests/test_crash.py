"""Crash test: unique signed webhooks stream at a real `hookyard serve` routed to an HTTP sink;
the server is SIGKILLed several times mid-stream and restarted on the same port.

Proved at the end, for every webhook that ever got a 200:

* it is stored exactly once: one `events` row for its idempotency key, with the event id the
  200 named (a webhook re-sent after a kill — as a provider retries an unanswered request —
  answers 200 `duplicate: true` with the first id, and no second row appears);
* it reached the sink at least once (`webhook-id` = event id); extra copies are counted as
  redelivered (a delivery in flight when the server died is sent again after the restart).

The sender behaves like a provider: a request that got no answer (connection refused or cut by
the kill) is re-signed and re-sent until it gets one. `crash_campaign` is also what
bench/crash/run.py runs, longer (minutes, many kills, thousands of webhooks).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from receiver import settings as settings_mod
from tests.fakes import FakeSink, Reply
from tests.support import (
    RENDERGRID_SECRET,
    Server,
    events_by_job,
    signed_headers,
    status_counts,
    wait_for,
)

CONFIG = """
[server]
database = "sqlite:///{db}"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["{secret}"]

[sinks.backend]
type = "http"
url = "{sink_url}/events"
retry_schedule_s = [0.2, 0.5, 1, 2]
max_attempts = 50
timeout_s = 10

[[routes]]
sources = ["*"]
types = ["*"]
sinks = ["backend"]
"""


def body_for(job: str) -> bytes:
    return json.dumps({"event": "creation.completed", "id": job, "status": "completed",
                       "result_urls": [f"https://cdn.example/{job}.jpg"],
                       "cost": 0.1}).encode()


@dataclass
class Report:
    webhooks: int = 0  # distinct webhooks sent
    kills: int = 0
    acked: int = 0  # distinct webhooks that got a 200
    requests: int = 0  # HTTP requests sent, re-sends included
    unanswered: int = 0  # requests that got no answer (refused, or cut by a kill)
    duplicate_answers: int = 0  # 200 "duplicate": true (stored before a kill, answer lost)
    other_statuses: dict[int, int] = field(default_factory=dict)
    stored: int = 0  # events rows
    lost_not_stored: int = 0  # acked, but no row with that id (must be 0)
    stored_twice: int = 0  # idempotency keys with more than one row, ids answered twice (0)
    wrong_id: int = 0  # the row for a job has another id than its 200 said (must be 0)
    lost_not_delivered: int = 0  # acked, never reached the sink (must be 0)
    sink_requests: int = 0
    redelivered: int = 0  # sink requests beyond the first per event id
    pending_at_end: int = 0  # delivery rows not yet delivered when checked (must be 0)
    seconds: float = 0.0
    kill_times: list[float] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.lost_not_stored + self.lost_not_delivered

    def line(self) -> str:
        return (f"webhooks={self.webhooks} kills={self.kills} acked={self.acked} "
                f"lost={self.lost} (not stored {self.lost_not_stored}, not delivered "
                f"{self.lost_not_delivered}) redelivered={self.redelivered} "
                f"stored={self.stored} stored_twice={self.stored_twice} "
                f"wrong_id={self.wrong_id} requests={self.requests} "
                f"unanswered={self.unanswered} duplicate_answers={self.duplicate_answers} "
                f"sink_requests={self.sink_requests} pending_at_end={self.pending_at_end} "
                f"other_statuses={self.other_statuses} in {self.seconds:.1f} s")


class Sender:
    """Posts every job until each has an answer; runs its own event loop in a thread."""

    def __init__(self, url: str, config: settings_mod.Settings, jobs: list[str],
                 concurrency: int) -> None:
        self.url = url
        self.config = config
        self.queue: collections.deque[str] = collections.deque(jobs)
        self.concurrency = concurrency
        self.answers: dict[str, list[str]] = collections.defaultdict(list)  # job -> event ids
        self.requests = 0
        self.unanswered = 0
        self.duplicates = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    @property
    def acked(self) -> int:
        with self.lock:
            return len(self.answers)

    def start(self) -> None:
        self.thread.start()

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency,
                              max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(base_url=self.url, timeout=15, limits=limits) as client:
            await asyncio.gather(*(self._worker(client) for _ in range(self.concurrency)))

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while True:
            try:
                job = self.queue.popleft()
            except IndexError:
                return
            while not await self._post(client, job):
                await asyncio.sleep(0.05)  # the server is down: retry like a provider

    async def _post(self, client: httpx.AsyncClient, job: str) -> bool:
        body = body_for(job)
        self.requests += 1
        try:
            r = await client.post("/hooks/rendergrid", content=body,
                                  headers=signed_headers(self.config, "rendergrid", body))
        except httpx.HTTPError:
            self.unanswered += 1
            return False
        self.statuses[r.status_code] += 1
        if r.status_code != 200:
            return False  # 503 while the store recovers would be retried too
        answer = r.json()
        with self.lock:
            self.answers[job].append(answer["event_id"])
            self.duplicates += bool(answer["duplicate"])
        return True


def crash_campaign(tmp: Path, *, webhooks: int, kills: int, concurrency: int = 32,
                   sink_delay_s: float = 0.0, settle_timeout_s: float = 60.0,
                   log: Callable[[str], None] = lambda _: None) -> Report:
    """Stream `webhooks` unique signed webhooks, SIGKILL the server `kills` times spread over the
    stream (each kill once acks pass the next threshold), restart it each time, let every
    webhook be answered and every delivery settle, then check. Returns the counts."""
    report = Report(webhooks=webhooks)
    started = time.monotonic()
    with FakeSink(default=Reply(200, "ok", delay_s=sink_delay_s)) as sink:
        config_path = tmp / "hookyard.toml"
        config_path.write_text(CONFIG.format(db=tmp / "hookyard.db", secret=RENDERGRID_SECRET,
                                             sink_url=sink.url))
        config = settings_mod.load(str(config_path))
        server = Server(config_path, tmp).start()
        jobs = [f"crash-{uuid.uuid4()}" for _ in range(webhooks)]
        sender = Sender(server.url, config, jobs, concurrency)
        try:
            sender.start()
            for k in range(1, kills + 1):
                threshold = webhooks * k // (kills + 1)
                while sender.acked < threshold and sender.thread.is_alive():
                    time.sleep(0.005)
                server.kill()  # requests and deliveries are in flight right now
                report.kills += 1
                report.kill_times.append(round(time.monotonic() - started, 2))
                log(f"kill {k}/{kills} at {report.kill_times[-1]:.1f} s: acked "
                    f"{sender.acked}/{webhooks}, sink requests {len(sink.requests)}")
                time.sleep(0.2)  # the senders see refused connections meanwhile
                server.start(timeout=30)
            sender.thread.join(timeout=max(120.0, webhooks / 20))
            assert not sender.thread.is_alive(), "the sender did not finish"
            # Every delivery row delivered (or the deadline: the report counts what is not). A
            # row is delivered only once the sink answered, so the sink has recorded them all.
            with contextlib.suppress(AssertionError):
                wait_for(lambda: set(status_counts(tmp / "hookyard.db")) == {"delivered"},
                         timeout=settle_timeout_s, interval=0.2)
        finally:
            server.kill()
        rows, status = events_by_job(tmp / "hookyard.db"), status_counts(tmp / "hookyard.db")
        received = [r.headers["webhook-id"] for r in sink.requests]

    report.seconds = time.monotonic() - started
    report.acked = len(sender.answers)
    report.requests = sender.requests
    report.unanswered = sender.unanswered
    report.duplicate_answers = sender.duplicates
    report.other_statuses = {k: v for k, v in sender.statuses.items() if k != 200}
    report.stored = sum(len(ids) for ids in rows.values())
    report.pending_at_end = sum(n for s, n in status.items() if s != "delivered")
    delivered_ids = collections.Counter(received)
    report.sink_requests = len(received)
    report.redelivered = sum(n - 1 for n in delivered_ids.values())
    for job, answered in sender.answers.items():
        stored_ids = rows.get(job, [])
        if not stored_ids:
            report.lost_not_stored += 1
            continue
        if len(stored_ids) > 1 or len(set(answered)) > 1:
            report.stored_twice += 1
        if set(answered) != set(stored_ids):
            report.wrong_id += 1
        if answered[0] not in delivered_ids:
            report.lost_not_delivered += 1
    return report


def test_sigkill_three_times_mid_stream_loses_nothing(tmp_path: Path) -> None:
    report = crash_campaign(tmp_path, webhooks=1500, kills=3, concurrency=32,
                            sink_delay_s=0.02)
    print(report.line())
    assert report.kills == 3
    assert report.acked == report.webhooks  # the sender retried until every one was answered
    assert report.lost == 0
    assert report.stored_twice == 0 and report.wrong_id == 0
    assert report.stored == report.webhooks  # nothing stored that nobody sent
    assert report.pending_at_end == 0
    assert report.unanswered > 0, "no request was cut or refused: the kills missed the stream"
