"""The delivery engine: claims, retries, dead letters, breaker, pacing, recovery, shutdown."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from receiver import settings as settings_mod
from receiver.core import events
from receiver.delivery import Breaker, Delivery, retry_delay
from receiver.store import NewEvent
from receiver.store.sqlite import SqliteStore
from tests.support import wait_until

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def sink_config(tmp: Path, **sinks: str) -> settings_mod.Settings:
    """[sinks.NAME] http sinks at http://NAME.test/ with extra TOML lines per sink."""
    text = "\n".join(
        f'[sinks.{name}]\ntype = "http"\nurl = "http://{name}.test/hook"\n{extra}\n'
        for name, extra in sinks.items()
    )
    path = tmp / "d.toml"
    path.write_text(text)
    return settings_mod.load(str(path))


def event(i: int) -> events.Event:
    return events.generation_event(
        source="rg",
        provider="rendergrid",
        job_id=f"job-{i}",
        status="completed",
        via="webhook",
        raw={"id": f"job-{i}"},
    )


class Engine:
    def __init__(self, store: SqliteStore, delivery: Delivery, calls: dict[str, list[float]]):
        self.store, self.delivery, self.calls = store, delivery, calls

    async def add(self, n: int, sinks: tuple[str, ...], first: int = 0) -> list[str]:
        items = [NewEvent(event(i), b"{}", {}, sinks) for i in range(first, first + n)]
        results = await self.store.write_events(items)
        self.delivery.events_stored(items, results)
        return [r.event_id for r in results]

    async def until(
        self, check: Callable[[dict[tuple[str, str], int]], bool], timeout: float = 10.0
    ) -> dict[tuple[str, str], int]:
        async def reached() -> bool:
            return check(await self.store.delivery_counts())

        await wait_until(reached, timeout, what="the delivery counts")
        return await self.store.delivery_counts()


@asynccontextmanager
async def engine(
    tmp: Path,
    handlers: dict[str, Handler],
    config: settings_mod.Settings,
    breaker: Callable[[], Breaker] = Breaker,
    grace_s: float = 5.0,
) -> AsyncIterator[Engine]:
    calls: dict[str, list[float]] = {name: [] for name in handlers}

    async def route(request: httpx.Request) -> httpx.Response:
        name = request.url.host.removesuffix(".test")
        calls[name].append(time.monotonic())
        return await handlers[name](request)

    store = SqliteStore(str(tmp / "d.db"))
    await store.open()
    async with httpx.AsyncClient(transport=httpx.MockTransport(route)) as http:
        delivery = Delivery(
            config.sinks, store, http=http, breaker_factory=breaker, grace_s=grace_s
        )
        await delivery.start()
        try:
            yield Engine(store, delivery, calls)
        finally:
            await delivery.stop()
            await store.close()


def answers(*statuses: int, headers: dict[str, str] | None = None) -> Handler:
    """Answer the given statuses in order, then 200 forever."""
    queue = list(statuses)

    async def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(queue.pop(0) if queue else 200, headers=headers)

    return handler


FAST = "retry_schedule_s = [0.05, 0.05, 0.05]"


async def test_500_twice_then_delivered_on_the_third_attempt(tmp_path: Path) -> None:
    config = sink_config(tmp_path, a=FAST)
    async with engine(tmp_path, {"a": answers(500, 500)}, config) as e:
        [event_id] = await e.add(1, ("a",))
        await e.until(lambda c: c.get(("a", "delivered")) == 1)
        sent = len(e.calls["a"])
        # Nothing more is sent after the success: a later event on the same sink gets through
        # while the first one's row stays untouched.
        await e.add(1, ("a",), first=1)
        await e.until(lambda c: c.get(("a", "delivered")) == 2)
        stored = await e.store.get_event(event_id)
    assert sent == 3 and len(e.calls["a"]) == 4
    assert stored is not None
    [delivery] = stored["deliveries"]
    assert delivery["attempts"] == 3 and delivery["last_status_code"] == 200
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 200]
    assert [a["outcome"] for a in delivery["attempt_log"]] == ["pending", "pending", "delivered"]


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
async def test_permanent_4xx_is_tried_once_and_dead(tmp_path: Path, status: int) -> None:
    config = sink_config(tmp_path, a=FAST)
    async with engine(tmp_path, {"a": answers(status)}, config) as e:
        await e.add(1, ("a",))
        await e.until(lambda c: c.get(("a", "dead")) == 1)
        # The dead row is not retried: a later event on the same sink gets through (the
        # script answers 200 from now on) and the sink saw one call for each.
        await e.add(1, ("a",), first=1)
        await e.until(lambda c: c.get(("a", "delivered")) == 1)
    assert len(e.calls["a"]) == 2


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503])
async def test_transient_answers_are_retried(tmp_path: Path, status: int) -> None:
    config = sink_config(tmp_path, a=FAST)
    async with engine(tmp_path, {"a": answers(status)}, config) as e:
        await e.add(1, ("a",))
        await e.until(lambda c: c.get(("a", "delivered")) == 1)
    assert len(e.calls["a"]) == 2


async def test_last_allowed_attempt_makes_it_dead(tmp_path: Path) -> None:
    config = sink_config(tmp_path, a=FAST + "\nmax_attempts = 3")
    async with engine(tmp_path, {"a": answers(*[500] * 10)}, config) as e:
        [event_id] = await e.add(1, ("a",))
        await e.until(lambda c: c.get(("a", "dead")) == 1)
        stored = await e.store.get_event(event_id)
    assert len(e.calls["a"]) == 3
    assert stored is not None and stored["deliveries"][0]["last_error"].startswith("POST http")


async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    config = sink_config(tmp_path, a=FAST)
    async with engine(tmp_path, {"a": answers(429, headers={"Retry-After": "1"})}, config) as e:
        await e.add(1, ("a",))
        await e.until(lambda c: c.get(("a", "delivered")) == 1)
    first, second = e.calls["a"]
    assert second - first >= 0.95  # the schedule said 0.05 s; the sink said 1 s


async def test_a_hanging_sink_does_not_hold_up_another(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def hang(_: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200)

    config = sink_config(tmp_path, slow="timeout_s = 30", fast="")
    async with engine(tmp_path, {"slow": hang, "fast": answers()}, config, grace_s=0.1) as e:
        await e.add(20, ("slow", "fast"))
        counts = await e.until(lambda c: c.get(("fast", "delivered")) == 20)
        release.set()
    assert counts.get(("slow", "delivered"), 0) == 0  # still hanging while fast finished


async def test_a_send_past_its_timeout_is_a_transient_failure(tmp_path: Path) -> None:
    slow_once = [True]

    async def handler(_: httpx.Request) -> httpx.Response:
        if slow_once.pop() if slow_once else False:
            await asyncio.sleep(5)
        return httpx.Response(200)

    config = sink_config(tmp_path, a=FAST + "\ntimeout_s = 0.2")
    async with engine(tmp_path, {"a": handler}, config) as e:
        [event_id] = await e.add(1, ("a",))
        await e.until(lambda c: c.get(("a", "delivered")) == 1)
        stored = await e.store.get_event(event_id)
    assert stored is not None
    log = stored["deliveries"][0]["attempt_log"]
    assert "timeout_s = 0.2" in log[0]["error"] and log[1]["outcome"] == "delivered"


async def test_rate_limit_spaces_sends(tmp_path: Path) -> None:
    config = sink_config(tmp_path, a="rate_per_s = 10")
    async with engine(tmp_path, {"a": answers()}, config) as e:
        await e.add(6, ("a",))
        await e.until(lambda c: c.get(("a", "delivered")) == 6)
    gaps = [b - a for a, b in zip(e.calls["a"], e.calls["a"][1:], strict=False)]
    assert min(gaps) >= 0.09


async def test_open_breaker_makes_rows_wait_instead_of_burning_attempts(tmp_path: Path) -> None:
    down = [True]

    async def flaky(_: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if down[0] else 200)

    config = sink_config(
        tmp_path, a="retry_schedule_s = [0.01]\nmax_attempts = 50\nconcurrency = 1"
    )
    now = [0.0]  # the breaker's clock: the cool-down lasts until the test moves it
    breaker = RefusingBreaker(threshold=3, cooldown_s=0.5, clock=lambda: now[0])
    async with engine(tmp_path, {"a": flaky}, config, breaker=lambda: breaker) as e:
        await e.add(5, ("a",))
        await wait_until(lambda: breaker.refused > 0, what="a send held by the open breaker")
        during_outage = len(e.calls["a"])
        down[0] = False
        now[0] += 1.0  # past the cool-down: the probe goes out
        await e.until(lambda c: c.get(("a", "delivered")) == 5)
    assert during_outage == 3  # three failures opened it; then nothing until the probe


class RefusingBreaker(Breaker):
    """A Breaker that counts the sends it held back while open: proof the engine came back to
    the sink during the cool-down and sent nothing."""

    refused = 0

    def allowance(self, free: int) -> int:
        allowed = super().allowance(free)
        if self.is_open and not allowed:
            self.refused += 1
        return allowed


def test_breaker_opens_probes_and_closes() -> None:
    now = [0.0]
    b = Breaker(threshold=2, cooldown_s=10, max_cooldown_s=25, clock=lambda: now[0])
    assert b.allowance(4) == 4
    assert b.failure() is False and b.failure() is True
    assert b.allowance(4) == 0 and b.wait_s() == 10
    now[0] = 10.0
    assert b.allowance(4) == 1 and b.allowance(4) == 0  # one probe at a time
    assert b.failure() is True and b.cooldown_s == 20  # failed probe: reopen, doubled
    now[0] = 30.0
    assert b.allowance(4) == 1
    assert b.success() is True and b.allowance(4) == 4 and b.cooldown_s == 10


def test_retry_delay_follows_schedule_with_jitter_and_retry_after() -> None:
    rng = random.Random(1)
    schedule = (5.0, 30.0)
    first = [retry_delay(schedule, 1, None, rng) for _ in range(200)]
    assert min(first) >= 4.0 and max(first) <= 6.0 and len(set(first)) > 100
    assert 24.0 <= retry_delay(schedule, 7, None, rng) <= 36.0  # past the end: the last step
    assert retry_delay(schedule, 1, 120.0, rng) == 120.0
    assert retry_delay(schedule, 1, 10**9, rng) == 3600.0  # capped


async def test_rows_pending_at_start_up_are_delivered(tmp_path: Path) -> None:
    """What a crash leaves behind (pending rows, some mid-retry) is sent by the next start."""
    store = SqliteStore(str(tmp_path / "d.db"))
    await store.open()
    await store.write_events([NewEvent(event(i), b"{}", {}, ("a",)) for i in range(10)])
    await store.close()
    config = sink_config(tmp_path, a="")
    async with engine(tmp_path, {"a": answers()}, config) as e:
        await e.until(lambda c: c.get(("a", "delivered")) == 10)
    assert len(e.calls["a"]) == 10


async def test_shutdown_cancels_hung_sends_and_leaves_them_pending(tmp_path: Path) -> None:
    async def hang(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(60)
        return httpx.Response(200)

    config = sink_config(tmp_path, a="timeout_s = 60")
    async with engine(tmp_path, {"a": hang}, config, grace_s=0.2) as e:
        await e.add(3, ("a",))
        while len(e.calls["a"]) < 3:
            await asyncio.sleep(0.01)
    store = SqliteStore(str(tmp_path / "d.db"))
    await store.open()
    counts = await store.delivery_counts()
    await store.close()
    assert counts == {("a", "pending"): 3}
