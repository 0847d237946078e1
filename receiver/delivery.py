"""Delivery workers: send pending delivery rows to their sinks, durably and politely.

One `SinkRunner` per configured sink claims that sink's due rows and sends them, under the
sink's own concurrency cap, rate limit and circuit breaker, so a slow or dead sink never holds up
another sink or the ingest path. Each runner is a due-loop (receiver.core.dueloop): new rows
wake it at once (ingest tells us), retries sleep until they are due. Outcomes are committed in
groups (receiver.core.batching, policy RETRY: a store outage delays them, never drops them; the
rows stay claimed meanwhile).

Failures retry on the sink's `retry_schedule_s` with ±20 % jitter, never sooner than a
`Retry-After` (capped at an hour); a permanent failure (a 4xx other than 408/409/425/429) or
the last allowed attempt makes the delivery dead. Nothing is lost on a crash: claims are leases
in the rows, so rows that were in flight are sent again when their lease ends (at once when the
process restarts on the same host).

A sink taken out of the config has no runner, so its pending rows would wait forever (and keep
their events from retention): at start, `Delivery` makes them dead letters, with the reason,
and logs one warning per such sink (`delivery.sink_removed`) saying how to send them again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, cast

import httpx
import structlog

from handlers.sinks import SINK_SPECS
from handlers.sinks.base import Sink, SinkContext, SinkError, send_budget_s
from receiver import logs
from receiver.core.batching import GroupCommit, OnError
from receiver.core.dueloop import FIRST_PAUSE_S, MAX_PAUSE_S, DueLoop
from receiver.core.errors import Conflict
from receiver.core.http import RETRY_AFTER_MAX_S
from receiver.core.outputs import MirroredOutput, status_of, with_mirrors
from receiver.core.pacing import RateLimiter
from receiver.core.poster import Poster
from receiver.metrics import Metrics
from receiver.settings import SinkSettings
from receiver.store import Due, NewEvent, Outcome, Store, Stored, removed_sink_error

log = structlog.get_logger("hookyard.delivery")

JITTER = 0.2
LEASE_MARGIN_S = 30.0  # a claim's lease outlasts the send budget by this much
CLAIM_BATCH = 32  # rows a runner claims at once (it sends them as its slots free up)
REMOVED_BATCH = 500  # rows of removed sinks made dead per transaction at start-up


def _lease_covers(due: Due, start: float, send_s: float) -> bool:
    """Whether the claim's lease outlasts a send of `send_s` started at `start` with at least
    half the margin to spare (time to store the outcome before another worker may take it)."""
    return due.lease_until - start >= send_s + LEASE_MARGIN_S / 2


def retry_delay(
    schedule: Sequence[float], attempts: int, retry_after_s: float | None, rng: random.Random
) -> float:
    """Seconds before the next attempt after `attempts` failed ones."""
    base = schedule[min(attempts, len(schedule)) - 1]
    delay = base * rng.uniform(1 - JITTER, 1 + JITTER)  # spread a failed burst's retries
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, RETRY_AFTER_MAX_S))  # the one cap (core.http)
    return delay


class Breaker:
    """A circuit breaker: after `threshold` consecutive transient failures the sink pauses for a
    cool-down (doubling up to `max_cooldown_s`), then one probe decides whether it reopens."""

    def __init__(
        self,
        threshold: int = 5,
        cooldown_s: float = 5.0,
        max_cooldown_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.clock = clock
        self.failures = 0
        self.cooldown_s = cooldown_s
        self.open_until: float | None = None
        self.probing = False

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def allowance(self, free: int) -> int:
        """How many sends may start now, out of `free` slots."""
        if self.open_until is None:
            return free
        if free <= 0 or self.probing or self.clock() < self.open_until:
            return 0
        self.probing = True  # half-open: exactly one probe
        return min(free, 1)

    def wait_s(self) -> float | None:
        if self.open_until is None or self.probing:
            return None
        return max(0.0, self.open_until - self.clock())

    def success(self) -> bool:
        """Record a send that reached the sink; True if this closed the breaker."""
        was_open = self.open_until is not None
        self.failures, self.open_until, self.probing = 0, None, False
        self.cooldown_s = self.base_cooldown_s
        return was_open

    def failure(self) -> bool:
        """Record a transient failure; True if this opened (or reopened) the breaker."""
        self.failures += 1
        if self.probing:
            self.cooldown_s = min(self.cooldown_s * 2, self.max_cooldown_s)
        elif self.open_until is not None or self.failures < self.threshold:
            return False
        self.open_until, self.probing = self.clock() + self.cooldown_s, False
        return True


class Outcomes:
    """Attempt outcomes on their way to the store: counted at once, committed in groups."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.metrics = metrics
        self._counters: dict[tuple[str, str], Any] = {}
        self.writer: GroupCommit[Outcome, None] = GroupCommit(
            store.record_outcomes, on_error=OnError.RETRY, name="delivery.outcomes"
        )

    def submit(self, outcome: Outcome) -> None:
        kind = "retry" if outcome.status == "pending" else outcome.status
        counter = self._counters.get((outcome.sink, kind))
        if counter is None:  # the labelled child, looked up once per sink and kind
            counter = self._counters[outcome.sink, kind] = self.metrics.deliveries.labels(
                outcome.sink, kind
            )
        counter.inc()
        self.writer.put(outcome)


class Linker(Protocol):
    """What a sink with `outputs_from` needs of the mirroring sink: working URLs of copies."""

    async def link(self, bucket: str, key: str) -> str: ...


class SinkRunner:
    """Claims and sends one sink's due deliveries.

    With `outputs_from` (settings) and the mirroring sink as `mirror`, it claims only rows whose
    event that sink has settled (delivered or dead: the store's claim condition, so nothing
    waits in memory and no attempt is spent waiting), and sends the event with `outputs`
    linking the mirrored copies (receiver.core.outputs.with_mirrors)."""

    def __init__(
        self,
        settings: SinkSettings,
        sink: Sink,
        store: Store,
        outcomes: Outcomes,
        breaker: Breaker,
        rng: random.Random,
        mirror: Linker | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.sink = sink
        self.store = store
        self.outcomes = outcomes
        self.breaker = breaker
        self.rng = rng
        self.limiter = RateLimiter(settings.rate_per_s)
        # A claim must outlast everything before the outcome is stored: waiting for the rate
        # limiter (a whole claimed batch, at rate_per_s), the send itself, and a margin.
        # Shorter, and a second worker would send the row again while this one still is.
        pacing_s = settings.concurrency / settings.rate_per_s if settings.rate_per_s else 0.0
        self.lease_s = settings.timeout_s + pacing_s + LEASE_MARGIN_S
        self.mirror = mirror
        self.inflight: dict[int, asyncio.Task[None]] = {}
        self._ahead: collections.deque[Due] = collections.deque()  # claimed, not yet started
        self.loop = DueLoop(self._claim, self._idle_wait, name=f"sink.{self.name}")
        self._budget = 0

    def wake(self) -> None:
        self.loop.wake()

    def nudge(self) -> None:
        self.loop.nudge()

    async def run(self) -> None:
        await self.loop.run()

    async def _claim(self) -> int:
        """Start sends in the free slots, from rows claimed ahead in a batch: one claim (one
        write transaction) serves many sends, which is what lets a sink keep up with a stream.
        A sink with a rate limit claims only what it can start now (its rows would wait)."""
        self._budget = self.breaker.allowance(self.settings.concurrency - len(self.inflight))
        if not self._budget:
            return 0
        waiting_for = self.settings.outputs_from
        if not self._ahead:
            want = self._budget if self.settings.rate_per_s else max(self._budget, CLAIM_BATCH)
            self._ahead.extend(
                await self.store.claim_due(
                    self.name, time.time(), want, self.lease_s, waiting_for=waiting_for
                )
            )
        started = 0
        while self._ahead and started < self._budget:
            item = await self._still_ours(self._ahead.popleft())
            if item is None:
                continue
            mirrors = None
            if waiting_for is not None:  # the copies, read when the row is about to go
                found = await self.store.mirrors_of([item.event["id"]], waiting_for)
                mirrors = found.get(item.event["id"])
            await self.limiter.acquire()
            self._start(item, mirrors)
            started += 1
        return started

    async def _still_ours(self, due: Due) -> Due | None:
        """A row claimed ahead whose lease would end before a send started now (the sink
        paused meanwhile) is renewed first; if another worker took it since, it is theirs to
        send (None)."""
        now = time.time()
        if _lease_covers(due, now, self.settings.timeout_s):
            return due
        until = now + self.lease_s
        if await self.store.renew([due.delivery_id], until) != 1:
            return None
        return dataclasses.replace(due, lease_until=until)

    async def _idle_wait(self) -> float | None:
        if self.breaker.is_open:
            await self._give_back_ahead()  # paused: let other workers (or a later try) have them
            return self.breaker.wait_s()
        if not self._budget:  # every slot busy: a finished send wakes us
            return None
        next_at = await self.store.next_due_at(  # new rows wake us sooner
            self.name, waiting_for=self.settings.outputs_from
        )
        return None if next_at is None else next_at - time.time()

    async def _give_back_ahead(self) -> None:
        if self._ahead:
            ids = [due.delivery_id for due in self._ahead]
            self._ahead.clear()
            await self.store.release(ids)

    def _start(self, due: Due, mirrors: list[MirroredOutput] | None = None) -> None:
        task = asyncio.create_task(
            self._deliver(due, mirrors), name=f"deliver-{self.name}-{due.delivery_id}"
        )
        self.inflight[due.delivery_id] = task
        task.add_done_callback(lambda _: self._finished(due.delivery_id))

    def _finished(self, delivery_id: int) -> None:
        self.inflight.pop(delivery_id, None)
        self.wake()

    async def _durable(
        self, event: dict[str, Any], mirrors: list[MirroredOutput] | None
    ) -> dict[str, Any]:
        """The event with links to the mirrored copies (fresh presigned ones on every send, so
        a replay days later works); the provider's URLs and `mirror_failed` where the mirror
        has no copy of every output."""
        if self.mirror is None:
            return event
        copies = {m.index: m for m in mirrors or ()}
        outputs = event.get("outputs")
        count = len(outputs) if isinstance(outputs, list) else 0
        if count and all(i in copies for i in range(count)):
            links: list[str | None] = [
                await self.mirror.link(copies[i].bucket, copies[i].key) for i in range(count)
            ]
        else:
            links = []
        return with_mirrors(event, links)

    async def _deliver(self, due: Due, mirrors: list[MirroredOutput] | None = None) -> None:
        started, clock = time.time(), time.perf_counter()
        budget_s = send_budget_s(self.sink, due.event, self.settings.timeout_s)
        if not _lease_covers(due, started, budget_s):
            # A long send (many outputs to mirror) outlasts the claim's lease: extend it first,
            # so no other worker takes the row while this one is still sending it. (Only
            # then: an ordinary send fits the lease it was claimed with, and a renewal is a
            # write transaction per delivery.)
            await self.store.renew([due.delivery_id], started + budget_s + LEASE_MARGIN_S)
        try:
            async with asyncio.timeout(budget_s):
                sent = await self.sink.send(await self._durable(due.event, mirrors))
        except SinkError as exc:
            self._failed(due, started, time.perf_counter() - clock, exc)
        except TimeoutError:
            error = SinkError(
                f"no answer within timeout_s = {budget_s:g}"
                if budget_s == self.settings.timeout_s
                else f"not done within this event's send budget of {budget_s:g} s"
            )
            self._failed(due, started, time.perf_counter() - clock, error)
        except Exception as exc:  # a sink bug must not kill the runner; retry like a failure
            log.error("delivery.sink_crashed", sink=self.name, exc_info=exc)
            self._failed(
                due,
                started,
                time.perf_counter() - clock,
                SinkError(f"sink error: {type(exc).__name__}: {exc}"),
            )
        else:
            code, mirrored = status_of(sent)
            self._delivered(due, started, time.perf_counter() - clock, code, mirrored)

    def _delivered(
        self,
        due: Due,
        started: float,
        took: float,
        code: int | None,
        mirrored: tuple[MirroredOutput, ...] = (),
    ) -> None:
        if self.breaker.success():
            self.outcomes.metrics.breaker_open.labels(self.name).set(0)
            log.info("sink.recovered", sink=self.name)
        self.outcomes.submit(
            Outcome(
                due.delivery_id,
                self.name,
                "delivered",
                due.attempts + 1,
                started,
                started,
                took,
                code,
                mirrored=mirrored,
            )
        )
        logs.hot_info(  # a line per delivery: made directly where hookyard's logging is in force
            log,
            "delivery.delivered",
            sink=self.name,
            event_id=due.event["id"],
            delivery_id=due.delivery_id,
            attempt=due.attempts + 1,
            status_code=code,
            ms=round(took * 1000, 1),
        )

    def _failed(self, due: Due, started: float, took: float, error: SinkError) -> None:
        error.message = self.settings.mask(error.message)  # stored, shown by the API, logged
        attempts = due.attempts + 1
        if error.permanent:
            self.breaker.success()  # the sink answered; it is this event it refuses
        elif self.breaker.failure():
            self.outcomes.metrics.breaker_open.labels(self.name).set(1)
            log.warning(
                "sink.paused",
                sink=self.name,
                cooldown_s=self.breaker.cooldown_s,
                consecutive_failures=self.breaker.failures,
            )
        dead = error.permanent or attempts >= self.settings.max_attempts
        next_at = started + took
        if not dead:
            next_at += retry_delay(
                self.settings.retry_schedule_s, attempts, error.retry_after_s, self.rng
            )
        self.outcomes.submit(
            Outcome(
                due.delivery_id,
                self.name,
                "dead" if dead else "pending",
                attempts,
                next_at,
                started,
                took,
                error.status_code,
                error.message,
            )
        )
        fields = {
            "sink": self.name,
            "event_id": due.event["id"],
            "delivery_id": due.delivery_id,
            "attempt": attempts,
            "status_code": error.status_code,
            "error": error.message,
        }
        if dead:
            why = "permanent failure" if error.permanent else f"{attempts} attempts made"
            log.error("delivery.dead", reason=why, **fields)
        else:
            log.warning("delivery.retry", retry_in_s=round(next_at - time.time(), 2), **fields)

    async def drain(self, grace_s: float) -> None:
        """After the run loop stopped: give in-flight sends `grace_s`, then cancel them (their
        rows stay pending and are sent at the next start)."""
        await self._give_back_ahead()
        pending = list(self.inflight.items())
        if pending:
            _, late = await asyncio.wait([t for _, t in pending], timeout=grace_s)
            for task in late:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*late, return_exceptions=True)
            await self.store.release([i for i, t in pending if t in late])


def sink_context(concurrency: int, timeout_s: float) -> SinkContext:
    """A sink's own connection pools, sized to its concurrency (so a slow sink's connections
    never queue another's sends): aiohttp for its POSTs, httpx for fetches (S3 outputs)."""
    http = httpx.AsyncClient(
        follow_redirects=False,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        headers={"User-Agent": "hookyard"},
    )
    return SinkContext(http, timeout_s, Poster(concurrency))


async def close_context(ctx: SinkContext) -> None:
    await ctx.http.aclose()
    if ctx.poster is not None:
        await ctx.poster.aclose()


class Delivery:
    """All sinks' runners, started and stopped with the app."""

    def __init__(
        self,
        sinks: Mapping[str, SinkSettings],
        store: Store,
        *,
        http: httpx.AsyncClient | None = None,
        breaker_factory: Callable[[], Breaker] = Breaker,
        grace_s: float = 10.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.sink_settings = dict(sinks)
        self.store = store
        self.grace_s = grace_s
        self.shared_http = http  # tests pass one client (a mock transport) for every sink
        self._contexts: list[SinkContext] = []
        self.breaker_factory = breaker_factory
        self.metrics = metrics or Metrics()
        self.outcomes = Outcomes(store, self.metrics)
        self.outcomes.writer.listeners.append(self._outcomes_committed)
        self.runners: dict[str, SinkRunner] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.removed: dict[str, int] = {}  # removed sink → its rows this start made dead

    async def start(self) -> None:
        rng = random.Random()
        for name, settings in self.sink_settings.items():
            if self.shared_http is not None:  # tests: every request through one (mock) client
                ctx = SinkContext(self.shared_http, settings.timeout_s)
            else:
                ctx = sink_context(settings.concurrency, settings.timeout_s)
                self._contexts.append(ctx)
            sink = SINK_SPECS[settings.type].create(name, settings.options, ctx)
            self.metrics.breaker_open.labels(name).set(0)
            self.runners[name] = SinkRunner(
                settings, sink, self.store, self.outcomes, self.breaker_factory(), rng
            )
        for runner in self.runners.values():  # a sink with outputs_from links the mirror's copies
            if runner.settings.outputs_from is not None:
                runner.mirror = cast(Linker, self.runners[runner.settings.outputs_from].sink)
        self._tasks = [
            asyncio.create_task(r.run(), name=f"sink-{n}") for n, r in self.runners.items()
        ]
        self._tasks.append(
            asyncio.create_task(self._dead_letter_removed_sinks(), name="delivery-removed-sinks")
        )

    async def _dead_letter_removed_sinks(self) -> None:
        """Rows still pending for a sink that is no longer configured would wait forever (no
        runner claims them) and keep their events from retention: make them dead letters, in
        batches, leaving the writer to webhooks between them (as long as each batch took).
        A failed batch (the store is down) is tried again with backoff. One warning per sink
        says how many went and how to send them again."""
        pause = FIRST_PAUSE_S
        try:
            while True:
                started = time.monotonic()
                try:
                    batch = await self.store.dead_letter_removed_sinks(
                        self.sink_settings, REMOVED_BATCH, time.time()
                    )
                except Exception as exc:
                    log.error("delivery.sink_removed_failed", error=repr(exc)[:300],
                              retry_in_s=pause)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, MAX_PAUSE_S)
                    continue
                pause = FIRST_PAUSE_S
                for sink, count in batch.items():
                    self.removed[sink] = self.removed.get(sink, 0) + count
                    self.metrics.deliveries.labels(sink, "dead").inc(count)
                if sum(batch.values()) < REMOVED_BATCH:
                    return
                await asyncio.sleep(time.monotonic() - started)
        finally:
            for sink, count in self.removed.items():
                log.warning(
                    "delivery.sink_removed",
                    sink=sink,
                    count=count,
                    error=removed_sink_error(sink),
                    fix=(
                        "its pending deliveries are dead letters now; to send them, add "
                        f"[sinks.{sink}] back, restart, and run "
                        f"`hookyard replay --dead --sink {sink}`, "
                        "or send their events to another sink: `hookyard deliveries list "
                        f"--status dead --sink {sink}` lists them, `hookyard replay EVENT_ID "
                        "--sink OTHER` sends one"
                    ),
                )

    async def retry(self, delivery_id: int, now: float) -> tuple[dict[str, Any], bool]:
        """Put a delivery back to pending (the admin API's and the UI's retry): the row and
        whether it changed (False: pending already). KeyError: no such delivery. A row of a
        sink that is no longer in the config would only wait (no runner claims it): it is
        left as it is, and Conflict names what to do instead. (A row's sink never changes,
        so reading it first cannot race the retry.)"""
        found = await self.store.list_deliveries(after=delivery_id - 1, limit=1)
        if not found or found[0]["id"] != delivery_id:
            raise KeyError(delivery_id)
        sink = str(found[0]["sink"])
        if sink not in self.sink_settings:
            raise Conflict(
                f"delivery {delivery_id} is to sink {sink!r}, which is no longer in the config; "
                f"add [sinks.{sink}] back and restart, or replay its event to another sink "
                f"(POST /v1/events/{found[0]['event_id']}/replay with \"sinks\": [\"OTHER\"])"
            )
        row, changed = await self.store.retry_delivery(delivery_id, now)
        if changed:
            self.wake([sink])
        return row, changed

    def events_stored(self, items: Sequence[NewEvent], results: Sequence[Stored]) -> None:
        """Ingest listener: new delivery rows exist, wake every runner."""
        if any(r.deliveries for r in results):
            self.wake(self.runners)

    def wake(self, names: Iterable[str]) -> None:
        for name in names:
            if name in self.runners:
                self.runners[name].wake()

    def nudge(self) -> None:
        """Another process may have added or freed rows: every runner looks (receiver.core
        .dueloop.DueLoop.nudge)."""
        for runner in self.runners.values():
            runner.nudge()

    def _outcomes_committed(self, outcomes: Sequence[Outcome], _: Sequence[None]) -> None:
        self.wake({o.sink for o in outcomes if o.status == "pending"})
        settled = {o.sink for o in outcomes if o.status != "pending"}
        # A mirror that settled lets the sinks waiting for it send that event now.
        self.wake(
            n for n, r in self.runners.items() if r.settings.outputs_from in settled
        )

    async def stop(self) -> None:
        """Stop claiming, let in-flight sends finish within the grace period, save outcomes."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(r.drain(self.grace_s) for r in self.runners.values()))
        await self.outcomes.writer.drain()
        for runner in self.runners.values():
            await runner.sink.aclose()
        for ctx in self._contexts:
            await close_context(ctx)
