"""Polling end to end: a real `hookyard serve`, fake providers and a sink on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import httpx
import pytest

from receiver import settings as settings_mod
from tests import support
from tests.fake_providers import (
    FakeGenly,
    FakeProvider,
    FakeRenderful,
    FakeRendergrid,
    FakeRenderNet,
    FakeRevid,
)
from tests.fakes import FakeSink
from tests.support import Server, delivery_counts, signed_headers, wait_for

TOKEN = "admin-token-for-tests-0123456789"
FAST = "poll_first_delay_s = 0\npoll_max_interval_s = 0.3\n"


def config_text(tmp: Path, sink: FakeSink, sources: str) -> str:
    return f"""
[server]
database = "sqlite:///{tmp}/hookyard.db"
admin_token = "{TOKEN}"
{sources}
[sinks.backend]
type = "http"
url = "{sink.url}/events"

[[routes]]
sources = ["*"]
types = ["*"]
sinks = ["backend"]
"""


def source(name: str, provider: str, fake: FakeProvider, extra: str = FAST) -> str:
    return (f'\n[sources.{name}]\nprovider = "{provider}"\napi_key = "{fake.api_key}"\n'
            f'base_url = "{fake.base_url}"\n{extra}\n')


def rendergrid_source(fake: FakeRendergrid, extra: str = "") -> str:
    return source("rendergrid", "rendergrid", fake,
                  f'secrets = ["rg-secret-0123456789"]\nfallback_poll_after_s = 0\n{extra}')


def start(tmp: Path, text: str) -> tuple[Server, Path]:
    path = tmp / "hookyard.toml"
    path.write_text(text)
    return Server(path, tmp).start(), path


def watch(server: Server, source_name: str, job_id: str, **extra: object) -> httpx.Response:
    r = httpx.post(f"{server.url}/v1/jobs", json={"source": source_name, "job_id": job_id, **extra},
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code in (200, 201), r.text
    return r


def delivered(sink: FakeSink) -> list[dict[str, object]]:
    return [r.json() for r in sink.requests]


def job_state(tmp: Path, source_name: str, job_id: str) -> str:
    return support.job_state(tmp / "hookyard.db", source_name, job_id)


def settled(tmp: Path) -> dict[tuple[str, str], int]:
    """The delivery counts once none is pending (else {}): the sink has all it will get."""
    counts = delivery_counts(tmp / "hookyard.db")
    return {} if any(status == "pending" for _, status in counts) else counts


CASES: list[tuple[str, type[FakeProvider]]] = [
    ("renderful", FakeRenderful), ("rendernet", FakeRenderNet), ("revid", FakeRevid),
    ("genly", FakeGenly),
]


@pytest.mark.parametrize(("provider", "fake_class"), CASES, ids=[c[0] for c in CASES])
def test_each_provider_job_reaches_the_sink_exactly_once(
    tmp_path: Path, sink: FakeSink, provider: str, fake_class: type[FakeProvider]
) -> None:
    extra = FAST
    if provider == "renderful":
        extra += 'secrets = ["rf-secret-0123456789"]\nsignature = { header = "X-Sig" }\n'
        extra += "fallback_poll_after_s = 0\n"
    with fake_class() as fake:
        fake.set_job("job-1", state="completed", outputs=["https://cdn.test/a.png"],
                     running_polls=2)
        server, _ = start(tmp_path, config_text(tmp_path, sink,
                                                source(provider, provider, fake, extra)))
        try:
            watch(server, provider, "job-1", metadata={"order": 42})
            wait_for(lambda: len(sink.requests) >= 1)
            # The job's end is in the store and every delivery is final: no poll and no
            # delivery is left to come.
            wait_for(lambda: job_state(tmp_path, provider, "job-1") != "watching", what="the end")
            wait_for(lambda: settled(tmp_path) == {("backend", "delivered"): 1}, what="delivery")
            state = job_state(tmp_path, provider, "job-1")
        finally:
            server.kill()
        polls = len(fake.status_requests("job-1"))
    [event] = delivered(sink)
    assert event["type"] == "generation.completed" and event["via"] == "poll"
    assert event["job_id"] == "job-1" and event["outputs"] == ["https://cdn.test/a.png"]
    assert event["metadata"] == {"order": 42}
    assert state == "done" and polls == 3


def test_rendergrid_is_never_polled_within_5_s_of_the_last_poll(tmp_path: Path,
                                                                sink: FakeSink) -> None:
    with FakeRendergrid() as fake:
        fake.set_job("c1", state="completed", outputs=["https://cdn.test/c1.jpg"],
                     running_polls=2)
        server, _ = start(tmp_path, config_text(tmp_path, sink, rendergrid_source(fake)))
        try:
            watch(server, "rendergrid", "c1")
            wait_for(lambda: len(sink.requests) >= 1, timeout=30)
        finally:
            server.kill()
        times = [r.at for r in fake.status_requests("c1")]
        statuses = [status for _, status in fake.exchanges]
    assert len(times) == 3 and 429 not in statuses
    assert min(b - a for a, b in itertools.pairwise(times)) >= 5.0
    [event] = delivered(sink)
    assert event["idempotency_key"] == "rendergrid:c1:completed"


def test_a_webhook_that_arrives_first_stops_the_polling(tmp_path: Path, sink: FakeSink) -> None:
    with FakeRendergrid() as fake:
        fake.set_job("c2", state="completed", outputs=["https://cdn.test/c2.jpg"])
        fake.set_job("c3", state="running")
        text = config_text(tmp_path, sink, rendergrid_source(fake).replace(
            "fallback_poll_after_s = 0", "fallback_poll_after_s = 2"))
        server, path = start(tmp_path, text)
        try:
            watch(server, "rendergrid", "c2")
            watch(server, "rendergrid", "c3")  # the marker: no webhook comes for it
            body = json.dumps({"event": "creation.completed", "id": "c2", "status": "completed",
                               "result_urls": ["https://cdn.test/c2.jpg"]}).encode()
            config = settings_mod.load(str(path))
            r = httpx.post(f"{server.url}/hooks/rendergrid", content=body,
                           headers=signed_headers(config, "rendergrid", body))
            assert r.status_code == 200
            # The marker's fallback poll, due just after c2's would have been, proves the
            # poller got past c2's moment.
            wait_for(lambda: fake.status_requests("c3"), what="the marker's fallback poll")
            state = job_state(tmp_path, "rendergrid", "c2")
        finally:
            server.kill()
        polls = fake.status_requests("c2")
    assert polls == [] and state == "done"
    [event] = delivered(sink)
    assert event["via"] == "webhook"


def test_deadline_produces_generation_expired_at_the_sink(tmp_path: Path, sink: FakeSink) -> None:
    with FakeRevid() as fake:
        fake.set_job("slow", state="running")
        server, _ = start(tmp_path, config_text(tmp_path, sink, source("revid", "revid", fake)))
        try:
            watch(server, "revid", "slow", deadline_s=1)
            wait_for(lambda: len(sink.requests) >= 1)
            # The job's end is saved just after its event, which may reach the sink first.
            wait_for(lambda: job_state(tmp_path, "revid", "slow") != "watching")
            state = job_state(tmp_path, "revid", "slow")
        finally:
            server.kill()
    [event] = delivered(sink)
    assert event["type"] == "generation.expired" and event["status"] == "expired"
    assert state == "expired"


def test_restarting_mid_watch_resumes_the_schedule(tmp_path: Path, sink: FakeSink) -> None:
    with FakeGenly() as fake:
        fake.set_job("r1", state="completed", outputs=["https://cdn.test/r1.png"],
                     running_polls=3)
        text = config_text(tmp_path, sink, source("genly", "genly", fake,
                                                  "poll_first_delay_s = 0\n"
                                                  "poll_max_interval_s = 1\n"))
        server, _ = start(tmp_path, text)
        try:
            watch(server, "genly", "r1")
            wait_for(lambda: len(fake.status_requests("r1")) >= 1)
        finally:
            server.kill()  # mid-watch: the job is still running at the provider
        assert sink.requests == []
        server, _ = start(tmp_path, text)
        try:
            wait_for(lambda: len(sink.requests) >= 1)
            wait_for(lambda: job_state(tmp_path, "genly", "r1") == "done", what="the job's end")
            wait_for(lambda: settled(tmp_path), what="final deliveries")
        finally:
            server.kill()
    [event] = delivered(sink)
    assert event["type"] == "generation.completed" and event["job_id"] == "r1"


CONFIRM = """
[sources.renderful]
provider = "renderful"
api_key = "{key}"
base_url = "{base}"
signature = {{ scheme = "none" }}
confirm = "fetch"
poll_max_interval_s = 0.2
"""


def test_confirm_by_fetch_builds_the_event_from_the_status_api(tmp_path: Path,
                                                               sink: FakeSink) -> None:
    with FakeRenderful() as fake:
        fake.set_job("g1", state="completed", outputs=["https://cdn.test/g1.png"], cost=0.2)
        text = config_text(tmp_path, sink, CONFIRM.format(key=fake.api_key, base=fake.base_url))
        server, _ = start(tmp_path, text)
        try:
            # The callback claims a failure; only the provider's own answer counts.
            hint = {"event": "generation.failed", "data": {"id": "g1", "status": "failed"}}
            r = httpx.post(f"{server.url}/hooks/renderful", json=hint)
            ghost = httpx.post(f"{server.url}/hooks/renderful", json={"data": {"id": "nope"}})
            wait_for(lambda: len(sink.requests) >= 1)
            # A job's end is saved after its event, so an event for "nope" would be stored by
            # now; the deliveries being final means the sink has all it will ever get.
            wait_for(lambda: job_state(tmp_path, "renderful", "nope") == "failed")
            wait_for(lambda: settled(tmp_path), what="final deliveries")
        finally:
            server.kill()
    assert r.status_code == 202 and r.json() == {"job_id": "g1", "confirming": True}
    assert ghost.status_code == 202
    [event] = delivered(sink)  # nothing for the job the provider does not know
    assert event["type"] == "generation.completed" and event["cost"] == 0.2
    assert event["via"] == "poll" and event["job_id"] == "g1"


def test_polling_only_sources_have_no_webhook_url(tmp_path: Path, sink: FakeSink) -> None:
    with FakeRevid() as fake:
        server, _ = start(tmp_path, config_text(tmp_path, sink, source("revid", "revid", fake)))
        try:
            r = httpx.post(f"{server.url}/hooks/revid", json={"id": "x"})
        finally:
            server.kill()
    assert r.status_code == 404 and "receives no webhooks" in r.json()["message"]
