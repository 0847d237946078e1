"""The poller against a hostile or unlucky world: huge or dripping answers, redirects, 429 holds,
callback floods, dot-segment job ids, the final look at the deadline, and clock steps."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers import providers
from handlers.providers.base import PollContext
from receiver import poller
from receiver import settings as settings_mod
from receiver.core import events
from receiver.core.pacing import RateLimiter
from receiver.poller import NotPollable
from tests.support import app_client, wait_until
from tests.test_poller import CONFIG, FAST, Provider, Rig, revid, rig

SLOW_DEADLINE = CONFIG.replace(FAST, "poll_first_delay_s = 0\npoll_max_interval_s = 5\n")
RENDERGRID_NOW = CONFIG.replace("fallback_poll_after_s = 1", "fallback_poll_after_s = 0")


async def job_error(r: Rig, source: str, job_id: str) -> str:
    job = await r.store.get_job(source, job_id)
    return str(job.last_error) if job else ""


async def wait_for_error(r: Rig, job_id: str, text: str, timeout: float = 10.0) -> None:
    async def seen() -> bool:
        return text in await job_error(r, "revid", job_id)

    await wait_until(seen, timeout, what=f"{text!r} in the job's last_error")


# -- item 1: every poll is capped and has an overall deadline ---------------------------------


async def test_an_answer_over_the_cap_is_not_read_whole_and_is_retried(tmp_path: Path) -> None:
    produced = 0

    def huge() -> Iterator[bytes]:
        nonlocal produced
        for _ in range(64):  # 64 MiB if anyone read it all
            produced += 1 << 20
            yield b"x" * (1 << 20)

    calls = 0

    async def provider(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(200, content=huge())  # no Content-Length: streamed
        return httpx.Response(200, json={"status": "completed", "result": "https://cdn.test/a"})

    async with rig(tmp_path, Provider()) as r:
        r.poller.http = httpx.AsyncClient(transport=httpx.MockTransport(provider))
        await r.poller.watch("revid", "big")
        await r.until(lambda: calls >= 2)
        await r.settled("revid", "big")
        [event] = await r.events()
        await r.poller.http.aclose()
    assert event["type"] == events.COMPLETED
    assert produced <= poller.MAX_ANSWER_BYTES + 2 * (1 << 20)


@contextlib.asynccontextmanager
async def dripping_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A provider that promises a body and sends one byte of it every 0.2 s."""
    requests: list[int] = []
    stop = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(1)
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(b"Content-Length: 1000\r\n\r\n")
            while not stop.is_set():
                writer.write(b" ")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", requests
    finally:
        stop.set()
        server.close()
        await server.wait_closed()


async def test_a_dripping_answer_ends_at_the_poll_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller, "POLL_DEADLINE_S", 0.5)
    async with dripping_server() as (url, requests):
        config = CONFIG.replace('base_url = "http://revid.test"', f'base_url = "{url}"')
        async with rig(tmp_path, Provider(), config) as r:
            r.poller.http = httpx.AsyncClient()
            await r.poller.watch("revid", "drip")
            # Each byte comes well within any per-read timeout: only an overall deadline ends it.
            await wait_for_error(r, "drip", "no complete answer within 0.5 s")
            await r.until(lambda: len(requests) >= 2)  # and it is retried on the backoff
            job = await r.store.get_job("revid", "drip")
            await r.poller.http.aclose()
    assert job is not None and job.state == "watching"


# -- item 5: the deadline, redirects, holds, callbacks, dot segments, clocks -------------------


async def test_a_job_that_finished_before_its_deadline_is_not_reported_expired(
    tmp_path: Path,
) -> None:
    # Polls 2 s apart, deadline 1 s: the second poll is the final one AT the deadline, and by
    # then the job has finished.
    provider = Provider({"late": [revid("processing"), revid("completed", "https://cdn.test/l")]})
    async with rig(tmp_path, provider, SLOW_DEADLINE) as r:
        await r.poller.watch("revid", "late", deadline_s=1.0)
        state = await r.settled("revid", "late")
        [event] = await r.events()
    assert len(provider.polls("late")) == 2
    assert event["type"] == events.COMPLETED and state == "done"


async def test_a_job_still_running_at_the_final_look_expires(tmp_path: Path) -> None:
    provider = Provider({"slow": [revid("processing")]})
    async with rig(tmp_path, provider, SLOW_DEADLINE) as r:
        await r.poller.watch("revid", "slow", deadline_s=1.0)
        await r.settled("revid", "slow")
        [event] = await r.events()
    assert event["type"] == events.EXPIRED and len(provider.polls("slow")) == 2


async def test_a_redirect_is_retried_never_followed_nor_fatal(tmp_path: Path) -> None:
    moved = (302, {"moved": True}, {"Location": "http://elsewhere.test/steal"})
    provider = Provider({"r": [moved, revid("completed", "https://cdn.test/r")]})
    async with rig(tmp_path, provider) as r:
        await r.poller.watch("revid", "r")
        state = await r.settled("revid", "r")
        [event] = await r.events()
    assert event["type"] == events.COMPLETED and state == "done"
    assert [job for job, _, _ in provider.seen] == ["r", "r"]  # nothing sent to Location


async def test_a_hold_stops_callers_already_waiting_for_a_slot() -> None:
    limiter = RateLimiter(4)  # one slot every ~0.26 s
    sent: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        sent.append(time.monotonic())

    first = asyncio.create_task(one())
    await first
    waiting = [asyncio.create_task(one()) for _ in range(5)]  # slots at 0.26 .. 1.3 s
    await asyncio.sleep(0)
    hold_ends = time.monotonic() + 1.0
    limiter.hold(1.0)  # a 429 with Retry-After: 1
    await asyncio.gather(*waiting)
    assert all(at >= hold_ends for at in sent[1:])


async def test_a_429_holds_polls_already_queued_for_the_key(tmp_path: Path) -> None:
    seen: list[float] = []
    held_at: list[float] = []

    async def provider(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        if len(seen) == 2:  # by now the other jobs wait in the key's pacer (120/min)
            held_at.append(time.monotonic())
            return httpx.Response(429, json={"error": "slow down"}, headers={"Retry-After": "2"})
        return httpx.Response(200, json={"id": "c", "status": "processing"})

    async with rig(tmp_path, Provider(), RENDERGRID_NOW) as r:
        r.poller.http = httpx.AsyncClient(transport=httpx.MockTransport(provider))
        for i in range(6):
            await r.poller.watch("rendergrid", f"c{i}")
        await r.until(lambda: len(seen) >= 3, timeout=15)
        await r.poller.http.aclose()
    assert seen[2] - held_at[0] >= 1.9  # the polls queued before the 429 waited for its end


async def test_callbacks_cannot_poll_a_job_closer_than_its_minimum_interval(
    tmp_path: Path,
) -> None:
    provider = Provider({"c": [(200, {"id": "c", "status": "processing"}, {})]})
    async with rig(tmp_path, provider) as r:
        src = r.poller.sources["rendergrid"]
        src.poll = dataclasses.replace(src.poll, min_interval_s=1.0)
        await r.poller.watch("rendergrid", "c", confirm=True)
        while len(provider.polls("c")) < 3:  # a callback flood: one every 20 ms
            await r.poller.watch("rendergrid", "c", confirm=True)
            await asyncio.sleep(0.02)
    first, second, third = provider.polls("c")[:3]
    assert second - first >= 0.99 and third - second >= 0.99


async def test_a_callback_brings_a_poll_forward(tmp_path: Path) -> None:
    provider = Provider({"f": [(200, {"id": "f", "status": "processing"}, {})]})
    async with rig(tmp_path, provider, CONFIG.replace("= 1\n", "= 3600\n", 1)) as r:
        job, _ = await r.poller.watch("rendergrid", "f")  # first poll in an hour
        hinted, _ = await r.poller.watch("rendergrid", "f", confirm=True)
        await r.until(lambda: bool(provider.polls("f")))
    assert job.next_poll_at - job.created_at > 3000 and hinted.next_poll_at < job.next_poll_at


@pytest.mark.parametrize("job_id", [".", ".."])
async def test_dot_segment_job_ids_are_refused(tmp_path: Path, job_id: str) -> None:
    async with rig(tmp_path) as r:
        with pytest.raises(NotPollable, match="path segment"):
            await r.poller.watch("revid", job_id)


def test_the_client_would_drop_a_dot_segment() -> None:
    # Why the ids above are refused: httpx resolves dot segments, so the poll would ask for
    # another resource. _names_job is the poller's last guard for rows stored before the rule.
    assert httpx.URL("http://p.test/creations/..").path == "/"
    assert not poller._names_job("http://p.test/creations/..", "..")


@given(job_id=st.text(min_size=1, max_size=40).filter(lambda j: j not in (".", "..")))
def test_every_provider_keeps_any_job_id_as_one_segment(job_id: str) -> None:
    for provider in providers.PROVIDERS.values():
        if provider.poll is None:
            continue
        ctx = PollContext("s", provider.name, job_id, "http://p.test/api", "k", {})
        assert poller._names_job(provider.poll.build_request(ctx).url, job_id), provider.name


@pytest.mark.parametrize("step_s", [7200.0, -3600.0])
async def test_a_clock_step_neither_expires_jobs_early_nor_stalls_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step_s: float
) -> None:
    provider = Provider(
        {"j": [revid("processing"), revid("processing"), revid("completed", "https://c.test/j")]}
    )
    async with rig(tmp_path, provider) as r:
        await r.poller.watch("revid", "j", deadline_s=60)
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + step_s)  # the system clock steps
        r.poller.wake()
        await r.settled("revid", "j")
        [event] = await r.events()
    assert event["type"] == events.COMPLETED and len(provider.polls("j")) == 3


async def test_the_admin_api_answers_400_for_a_dot_segment_job_id(tmp_path: Path) -> None:
    text = CONFIG.replace(
        "[sources.revid]",
        f'[server]\ndatabase = "sqlite:///{tmp_path}/a.db"\n'
        'admin_token = "admin-token-0123456789abcdef"\n\n[sources.revid]',
    )
    (tmp_path / "a.toml").write_text(text)
    config = settings_mod.load(str(tmp_path / "a.toml"))
    auth = {"Authorization": "Bearer admin-token-0123456789abcdef"}
    async with app_client(config) as (client, _):
        answer = await client.post(
            "/v1/jobs", json={"source": "revid", "job_id": ".."}, headers=auth
        )
    assert answer.status_code == 400 and "path segment" in answer.json()["message"]
