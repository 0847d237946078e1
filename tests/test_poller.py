"""The poll scheduler: backoff, limits, Retry-After, 404s, deadlines, restarts, safety net."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from receiver import settings as settings_mod
from receiver.core import events
from receiver.ingest import Ingest
from receiver.poller import NotPollable, Poller
from receiver.router import Router
from receiver.store import EventFilter
from receiver.store.sqlite import SqliteStore
from tests.support import wait_until

FAST = "poll_first_delay_s = 0\npoll_max_interval_s = 0.1\n"
CONFIG = f"""
[sources.revid]
provider = "revid"
api_key = "sk_live_test"
base_url = "http://revid.test"
{FAST}

[sources.rendergrid]
provider = "rendergrid"
secrets = ["rg-secret-0123456789"]
api_key = "rg_live_test"
base_url = "http://rendergrid.test"
fallback_poll_after_s = 1

[sources.nokey]
provider = "renderful"
secrets = ["rf-secret-0123456789"]
signature = {{ header = "X-Renderful-Signature" }}
"""


@dataclass
class Provider:
    """Scripted answers per job: a list of (status, body, headers) used in order, the last
    one repeated."""

    answers: dict[str, list[tuple[int, object, dict[str, str]]]] = field(default_factory=dict)
    seen: list[tuple[str, float, str]] = field(default_factory=list)  # (job, time, auth)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        job = request.url.path.rsplit("/", 1)[-1]
        self.seen.append((job, time.monotonic(), request.headers.get("authorization", "")))
        script = self.answers.get(job, [(404, {"error": "not found"}, {})])
        status, body, headers = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(body, Exception):
            raise body
        return httpx.Response(status, json=body, headers=headers)

    def polls(self, job: str) -> list[float]:
        return [at for j, at, _ in self.seen if j == job]


@dataclass
class Rig:
    store: SqliteStore
    poller: Poller
    provider: Provider

    async def events(self) -> list[dict[str, object]]:
        """Every stored event in full, oldest first."""
        listed = await self.store.list_events(EventFilter(), limit=1000)
        found = [await self.store.get_event(e["id"]) for e in reversed(listed)]
        return [e for e in found if e is not None]

    async def until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        await wait_until(check, timeout)

    async def job_state(self, source: str, job_id: str) -> str | None:
        job = await self.store.get_job(source, job_id)
        return job.state if job else None

    async def settled(self, source: str, job_id: str, timeout: float = 10.0) -> str | None:
        """The job's state once it has left `watching` (its end is saved after the event)."""
        async def ended() -> bool:
            return await self.job_state(source, job_id) != "watching"

        await wait_until(ended, timeout, what=f"the end of job {job_id}")
        return await self.job_state(source, job_id)


@asynccontextmanager
async def rig(
    tmp: Path, provider: Provider | None = None, config_text: str = CONFIG
) -> AsyncIterator[Rig]:
    path = tmp / "p.toml"
    path.write_text(config_text)
    config = settings_mod.load(str(path))
    store = SqliteStore(str(tmp / "p.db"))
    await store.open()
    ingest = Ingest(store, Router([]))
    await ingest.start()
    provider = provider or Provider()
    async with httpx.AsyncClient(transport=httpx.MockTransport(provider)) as http:
        poller = Poller(config, store, ingest, http)
        await poller.start()
        try:
            yield Rig(store, poller, provider)
        finally:
            await poller.stop()
            await ingest.stop()
            await store.close()


def revid(status: str, result: str | None = None) -> tuple[int, object, dict[str, str]]:
    return (200, {"status": status, "result": result}, {})


async def test_job_polled_until_done_becomes_one_event_with_metadata(tmp_path: Path) -> None:
    provider = Provider(
        {
            "job_1": [
                revid("processing"),
                revid("processing"),
                revid("completed", "https://cdn.test/1.png"),
            ]
        }
    )
    async with rig(tmp_path, provider) as r:
        job, new = await r.poller.watch("revid", "job_1", metadata={"order": 7})
        assert new and job.state == "watching"
        await r.until(lambda: len(provider.polls("job_1")) >= 3)
        state = await r.settled("revid", "job_1")
        [event] = await r.events()
    assert event["type"] == events.COMPLETED and event["via"] == "poll"
    assert event["outputs"] == ["https://cdn.test/1.png"] and event["metadata"] == {"order": 7}
    assert event["raw"] == {"status": "completed", "result": "https://cdn.test/1.png"}
    assert state == "done" and len(provider.polls("job_1")) == 3
    assert {auth for _, _, auth in provider.seen} == {"Bearer sk_live_test"}


async def test_registering_twice_is_harmless(tmp_path: Path) -> None:
    provider = Provider({"j": [revid("processing")]})
    async with rig(tmp_path, provider) as r:
        first, new1 = await r.poller.watch("revid", "j", deadline_s=60)
        again, new2 = await r.poller.watch("revid", "j", deadline_s=999)
        jobs = await r.store.list_jobs()
    assert (new1, new2) == (True, False)
    assert again.deadline_at == first.deadline_at and len(jobs) == 1


async def test_deadline_produces_generation_expired(tmp_path: Path) -> None:
    provider = Provider({"slow": [revid("processing")]})
    async with rig(tmp_path, provider) as r:
        await r.poller.watch("revid", "slow", deadline_s=0.5, metadata={"k": "v"})
        await r.until(lambda: bool(provider.polls("slow")))
        state = await r.settled("revid", "slow")  # the end is saved after its event
        [event] = await r.events()
    assert event["type"] == events.EXPIRED and event["status"] == "expired"
    assert event["metadata"] == {"k": "v"} and "processing" in str(event["error"])
    assert state == "expired"


async def test_repeated_404_marks_the_job_failed_without_an_event(tmp_path: Path) -> None:
    provider = Provider()
    async with rig(tmp_path, provider) as r:
        await r.poller.watch("revid", "ghost")
        await r.until(lambda: len(provider.polls("ghost")) >= 3)
        await r.settled("revid", "ghost")
        job = await r.store.get_job("revid", "ghost")
        found = await r.events()
    assert job is not None and job.state == "failed" and "404" in str(job.last_error)
    assert found == [] and len(provider.polls("ghost")) == 3


async def test_retry_after_on_503_and_network_errors_are_retried(tmp_path: Path) -> None:
    provider = Provider(
        {
            "j": [
                (503, {"error": "overloaded"}, {"Retry-After": "1"}),
                (200, httpx.ConnectError("refused"), {}),
                revid("completed", "https://cdn.test/x.png"),
            ]
        }
    )
    async with rig(tmp_path, provider) as r:
        await r.poller.watch("revid", "j")
        await r.until(lambda: len(provider.polls("j")) >= 3, timeout=15)
        state = await r.settled("revid", "j")
    first, second, _ = provider.polls("j")
    assert second - first >= 0.95  # the provider asked for a second
    assert state == "done"


async def test_restart_resumes_the_schedule(tmp_path: Path) -> None:
    provider = Provider({"j": [revid("processing"), revid("completed", "https://cdn.test/y.png")]})
    async with rig(tmp_path, provider) as r:
        await r.poller.watch("revid", "j", metadata={"run": 1})
        await r.until(lambda: len(provider.polls("j")) >= 1)
    assert len(provider.polls("j")) == 1
    async with rig(tmp_path, provider) as r:  # a new process: the schedule is in the store
        await r.until(lambda: len(provider.polls("j")) >= 2)
        await r.settled("revid", "j")  # the end is saved after its event
        [event] = await r.events()
    assert event["type"] == events.COMPLETED and event["metadata"] == {"run": 1}


async def test_a_terminal_webhook_ends_the_watch_before_any_poll(tmp_path: Path) -> None:
    processing = [(200, {"id": "c1", "status": "processing"}, {})]
    provider = Provider({"c1": list(processing), "marker": list(processing)})
    async with rig(tmp_path, provider) as r:
        await r.poller.watch("rendergrid", "c1")  # first poll only after 1 s (fallback)
        await r.poller.watch("rendergrid", "marker")  # no webhook for this one
        webhook = events.generation_event(
            source="rendergrid",
            provider="rendergrid",
            job_id="c1",
            status="completed",
            via="webhook",
            raw={"id": "c1"},
        )
        await r.poller.ingest.submit(webhook, b'{"id": "c1"}', {})
        await r.settled("rendergrid", "c1")
        # The marker's fallback poll, due just after c1's would have been, proves the poller
        # got past c1's moment.
        await r.until(lambda: bool(provider.polls("marker")), timeout=5)
        state = await r.job_state("rendergrid", "c1")
    assert state == "done" and provider.polls("c1") == []


async def test_webhook_source_is_polled_after_the_fallback_delay(tmp_path: Path) -> None:
    done = {"id": "c2", "status": "completed", "result_urls": ["https://cdn.test/c2.jpg"]}
    provider = Provider({"c2": [(200, done, {})]})
    async with rig(tmp_path, provider) as r:
        job, _ = await r.poller.watch("rendergrid", "c2")
        await r.until(lambda: bool(provider.polls("c2")), timeout=5)
        await r.settled("rendergrid", "c2")  # the end is saved after its event
        [event] = await r.events()
    assert job.next_poll_at - job.created_at == pytest.approx(1.0, abs=0.05)
    assert event["idempotency_key"] == "rendergrid:c2:completed" and event["via"] == "poll"


async def test_sources_that_cannot_be_polled_say_why(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        for source, fix in [("nope", "no source named"), ("nokey", "api_key")]:
            with pytest.raises(NotPollable, match=fix):
                await r.poller.watch(source, "x")


async def test_per_key_rate_limit_spaces_polls(tmp_path: Path) -> None:
    text = CONFIG.replace(FAST, FAST + "poll_rate_per_s = 10\n")
    provider = Provider({f"j{i}": [revid("completed", "https://cdn.test/z.png")] for i in range(6)})
    async with rig(tmp_path, provider, text) as r:
        for i in range(6):
            await r.poller.watch("revid", f"j{i}")
        await r.until(lambda: len(provider.seen) >= 6)
    times = sorted(at for _, at, _ in provider.seen)
    # 10/s: never more than 10 in any second (a busy loop may bunch them, never exceed)
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 10
    assert times[-1] - times[0] >= 0.45  # six polls paced, not sent at once
