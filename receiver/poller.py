"""Polling: watch jobs at providers that send no webhook, and catch webhooks that never come.

One scheduler serves every watched job: the schedule is the `jobs` table (`next_poll_at`), read
soonest-first, so it survives restarts and costs nothing per idle job. Each source polls through
two pacers: the provider's documented limit per API key (Rendergrid 120/min, RevidAPI 1000/min)
and the source's own `poll_rate_per_s`. A job's next poll backs off while it runs (x1.5 up to
the cap), never comes sooner than the provider's per-job minimum (Rendergrid: 5 s) nor before a
`Retry-After`, and a network error or 5xx is retried later. A terminal answer becomes an event
through `ingest.submit`, with the same idempotency key a webhook would have, so a webhook and
a poll reporting the same outcome are one event. After repeated 404s a job is marked failed.

The deadline: the last poll is scheduled AT the deadline and asks the provider once more; only
a non-terminal answer then gives `generation.expired` (a job that finished after the previous
poll is reported as it finished). Past the deadline, network errors and 5xx are retried for one
more `max_interval_s`, then the job expires.

Limits: every poll answer is read under a size cap (`MAX_ANSWER_BYTES`) and the whole exchange
within `POLL_DEADLINE_S`; an answer over the cap, a redirect (never followed) or a peer too slow
is a transient provider problem, retried on the backoff and logged. A job is never polled sooner
than the provider's `min_interval_s` after its previous poll, also when a confirm-by-fetch
callback asks for an immediate poll (a callback may bring the next poll forward, not closer).
A `Retry-After` holds every poll for that key, also those already waiting in the pacer.

Clocks: the schedule in the store is wall time (other processes and the CLI read it), but the
poller measures it with `ScheduleClock`: the wall time at start plus the MONOTONIC time elapsed
since. A step of the system clock (NTP, a VM resume, an operator) therefore neither makes every
job look overdue or expired nor stalls retries until the clock catches up. Sleeps and pacers
use the monotonic clock directly.

Webhook providers: a watched job is first polled only `fallback_poll_after_s` after it was
registered, and a terminal webhook that arrives first ends the watch (safety net).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
import structlog

from handlers import providers
from handlers.providers.base import DONE, NOT_FOUND, Poll, PollAnswer, PollContext
from receiver.core import events
from receiver.core.batching import GroupCommit
from receiver.core.dueloop import DueLoop
from receiver.core.http import Answer, TooLarge, request_capped, retry_after_s
from receiver.core.pacing import RateLimiter
from receiver.ingest import Ingest
from receiver.metrics import Metrics
from receiver.settings import Settings, SourceSettings
from receiver.store import Job, Store, new_owner_id

log = structlog.get_logger("hookyard.poller")

NOT_FOUND_LIMIT = 3  # 404s in a row before a job is marked failed
BACKOFF = 1.5
REQUEST_TIMEOUT_S = 10.0  # each connect/read
POLL_DEADLINE_S = 20.0  # the whole exchange: a provider dripping bytes is cut off here
MAX_ANSWER_BYTES = 1_048_576  # a status answer larger than this is unreadable (retried)
IDLE_RECHECK_S = 5.0  # after a failed poll with no better idea of when to look again
LEADER_LEASE = "poller"  # the name of the leader lease in the store
LEADER_LEASE_S = 15.0  # a dead leader's polling is taken over within this (and a retry)
LEADER_RETRY_S = 1.0  # how often a process that does not poll checks whether it should
CREDENTIALS_WAIT_S = 300.0  # after 401/403: the key is wrong; look again later


class NotPollable(ValueError):
    """The source cannot be polled (unknown, no status API, or no api_key), or the job id
    cannot be put in a status URL."""


class ScheduleClock:
    """Wall-clock time that only moves with the monotonic clock (see the module docstring)."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._monotonic = monotonic
        self._wall0 = wall()
        self._mono0 = monotonic()

    def now(self) -> float:
        return self._wall0 + (self._monotonic() - self._mono0)


@dataclass
class PollSource:
    """A source the scheduler can poll, with its pacers and effective timings."""

    settings: SourceSettings
    poll: Poll
    key_limit: RateLimiter  # the provider's limit, shared by the sources using the same key
    own_limit: RateLimiter  # the source's poll_rate_per_s
    pushes_webhooks: bool

    @property
    def base_url(self) -> str:
        return (self.settings.base_url or self.poll.base_url).rstrip("/")

    @property
    def first_delay_s(self) -> float:
        first = self.settings.poll_first_delay_s
        return self.poll.first_delay_s if first is None else first

    @property
    def max_interval_s(self) -> float:
        cap = self.settings.poll_max_interval_s
        return max(self.poll.max_interval_s if cap is None else cap, self.poll.min_interval_s)

    def next_interval(self, previous: float) -> float:
        grown = previous * BACKOFF if previous else max(self.poll.min_interval_s, 2.0)
        return min(max(grown, self.poll.min_interval_s), self.max_interval_s)

    async def pace(self) -> None:
        await self.own_limit.acquire()
        await self.key_limit.acquire()


def poll_sources(settings: Settings) -> dict[str, PollSource]:
    """Every configured source with a status API and an api_key."""
    shared: dict[tuple[str, str], RateLimiter] = {}
    found = {}
    for name, src in settings.sources.items():
        provider = providers.PROVIDERS[src.provider]
        if provider.poll is None or not src.api_key:
            continue
        per_min = provider.poll.rate_per_min
        # "N requests per minute" per key: N/60 a second, and never N+1 in any 60 s window.
        key_limit = shared.setdefault(
            (provider.name, src.api_key),
            RateLimiter(per_min / 60, window_s=60) if per_min else RateLimiter(None),
        )
        found[name] = PollSource(
            src,
            provider.poll,
            key_limit,
            RateLimiter(src.poll_rate_per_s),
            provider.pushes_webhooks,
        )
    return found


def pollable(settings: Settings, sources: Mapping[str, PollSource], name: str) -> PollSource:
    """The PollSource called `name`, or NotPollable saying what to fix."""
    src = sources.get(name)
    if src is not None:
        return src
    if name not in settings.sources:
        raise NotPollable(f"no source named {name!r} is configured")
    provider = settings.sources[name].provider
    if providers.PROVIDERS[provider].poll is None:
        raise NotPollable(f"source {name!r} (provider {provider}) has no status API to poll")
    raise NotPollable(
        f"source {name!r} has no api_key, which polling needs; set [sources.{name}] api_key"
    )


def plan_job(
    src: PollSource,
    job_id: str,
    *,
    now: float,
    deadline_s: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    confirm: bool = False,
) -> Job:
    """A new watched job and its first poll time.

    confirm: a callback hinted that the job changed, so ask the provider at once. A webhook
    provider's job is first polled only after `fallback_poll_after_s` (the webhook's head
    start); a polling-only provider's after its module's first delay."""
    if not job_id or len(job_id) > 256:
        raise NotPollable("job_id must be a non-empty string of at most 256 characters")
    if job_id in (".", ".."):
        # A dot segment would change the status URL (`/creations/..` is `/`), not name a job.
        raise NotPollable(f"job_id {job_id!r} is not a job id: '.' and '..' are path segments")
    if confirm:
        first = 0.0
    elif src.pushes_webhooks:
        first = src.settings.fallback_poll_after_s
    else:
        first = src.first_delay_s
    deadline = now + (deadline_s or src.settings.deadline_s)
    return Job(
        src.settings.name,
        job_id,
        "watching",
        dict(metadata or {}),
        now,
        deadline,
        min(now + first, deadline),
        updated_at=now,
    )


class Poller:
    """The scheduler of watched jobs; starts and stops with the app."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        ingest: Ingest,
        http: httpx.AsyncClient,
        *,
        concurrency: int = 32,
        metrics: Metrics | None = None,
        clock: ScheduleClock | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ingest = ingest
        self.http = http
        self.concurrency = concurrency
        self.sources = poll_sources(settings)
        self.metrics = metrics or Metrics()
        self.clock = clock or ScheduleClock()
        # When each job was last asked (monotonic), for the provider's per-job minimum interval.
        # In memory like the pacers: one process polls (the leader), and after a restart the
        # stored schedule already keeps the interval.
        self._last_poll: dict[tuple[str, str], float] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.loop = DueLoop(self._claim, self._idle_wait, name="poller")
        self.leading = False  # whether this process holds the poller's leader lease
        self._lease_until = 0.0  # monotonic
        self.owner = new_owner_id()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Job updates share commits: polls that finish together pay one fsync.
        self._saver: GroupCommit[Job, None] = GroupCommit(store.save_jobs, name="job-saver")

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self.loop.run(), name="hookyard-poller")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop scheduling; polls under way get `grace_s`. The schedule is in the store, so a
        cancelled poll simply happens again after the restart."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        pending = [*self._inflight.values(), *self._background]
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self.leading:  # hand over at once instead of making the next leader wait it out
            with contextlib.suppress(Exception):
                await self.store.release_lease(LEADER_LEASE, self.owner)
            self.leading = False

    def wake(self) -> None:
        self.loop.wake()

    def nudge(self) -> None:
        self.loop.nudge()

    # -- registering -------------------------------------------------------------------------

    async def watch(
        self,
        source: str,
        job_id: str,
        *,
        deadline_s: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        confirm: bool = False,
    ) -> tuple[Job, bool]:
        """Watch a job (registering it twice is harmless); return the job and whether it is new.

        confirm: a callback hinted that the job changed, so ask the provider at once."""
        now = self.clock.now()
        src = pollable(self.settings, self.sources, source)
        job = plan_job(
            src,
            job_id,
            now=now,
            deadline_s=deadline_s,
            metadata=metadata,
            confirm=confirm,
        )
        stored, new = await self.store.watch_job(job)
        if new:
            log.info(
                "job.watching",
                source=source,
                job_id=job_id,
                first_poll_in_s=round(job.next_poll_at - now, 1),
                deadline_s=round(job.deadline_at - now),
            )
            self.wake()
        elif confirm and stored.state == "watching":
            # A callback may bring the next poll forward, never closer to the previous poll
            # than the provider allows: anyone can send callbacks to a confirm-by-fetch source.
            earliest = now + self._spacing_left(src, (source, job_id))
            if earliest < stored.next_poll_at:
                stored = dataclasses.replace(stored, next_poll_at=earliest, updated_at=now)
                await self._saver.submit(stored)
                self.wake()
        return stored, new

    # -- scheduling --------------------------------------------------------------------------

    async def _claim(self) -> int:
        """Start the due polls, if this process is the one that polls (the leader lease)."""
        if not await self._lead():
            return 0
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        due = await self.store.due_jobs(self.clock.now(), free, set(self._inflight))
        for job in due:
            self._start(job)
        return len(due)

    async def _idle_wait(self) -> float | None:
        if not self.leading:
            return LEADER_RETRY_S  # another process polls; see whether it still does
        wait = self._lease_until - time.monotonic() - LEADER_LEASE_S / 3  # renew in time
        if self.concurrency - len(self._inflight) > 0:
            next_at = await self.store.next_job_due_at()
            if next_at is not None:
                until_due = next_at - self.clock.now()
                # A job due now that is not startable is one in flight: its end wakes us.
                wait = min(wait, until_due) if until_due > 0 or not self._inflight else wait
        return max(0.0, wait)

    async def _lead(self) -> bool:
        """Take or renew the leader lease: exactly one process polls at a time, so provider
        limits hold for all of them together. A new leader waits out each key's window first:
        the one before it may have used that window's allowance just before it died."""
        if self.leading and time.monotonic() < self._lease_until - LEADER_LEASE_S * 2 / 3:
            return True
        held, took_over_at = await self.store.hold_lease(
            LEADER_LEASE, self.owner, LEADER_LEASE_S
        )
        if held and not self.leading:
            log.info("poller.leading", owner=self.owner, lease_s=LEADER_LEASE_S,
                     took_over=took_over_at is not None)
            if took_over_at is not None:
                self._wait_out_windows(took_over_at)
        elif not held and self.leading:
            log.warning("poller.lost_lead", owner=self.owner)
        self.leading = held
        if held:
            self._lease_until = time.monotonic() + LEADER_LEASE_S
        return held

    def _wait_out_windows(self, previous_until: float) -> None:
        """After taking over from a leader that died (its lease ran out at `previous_until`),
        hold each per-window key budget until a window has passed since then: the dead
        leader may have spent it in its last moments. Spacing rules (5 s per creation) are
        kept by the lease itself, which is longer."""
        since = time.time() - previous_until
        for src in self.sources.values():
            if src.key_limit.allowance and src.key_limit.window_s > since:
                src.key_limit.hold(src.key_limit.window_s - since)

    def _start(self, job: Job) -> None:
        key = (job.source, job.job_id)
        task = asyncio.create_task(self._guarded(job), name=f"poll-{job.source}-{job.job_id}")
        self._inflight[key] = task
        task.add_done_callback(lambda _: self._finished(key))

    def _finished(self, key: tuple[str, str]) -> None:
        self._inflight.pop(key, None)
        self.wake()

    async def _guarded(self, job: Job) -> None:
        try:
            await self._poll(job)
        except Exception as exc:  # one job's surprise must not stop the scheduler
            log.error("poll.crashed", source=job.source, job_id=job.job_id, exc_info=exc)
            with contextlib.suppress(Exception):
                await self._again(
                    job, self.clock.now(), f"internal error: {type(exc).__name__}", None
                )

    # -- one poll ----------------------------------------------------------------------------

    async def _poll(self, job: Job) -> None:
        src = self.sources.get(job.source)
        if src is None:
            await self._end(job, "failed", "its source is no longer configured for polling")
            return
        key = (job.source, job.job_id)
        if (wait := self._spacing_left(src, key)) > 0:
            await asyncio.sleep(wait)
        await src.pace()
        ctx = PollContext(
            job.source,
            src.settings.provider,
            job.job_id,
            src.base_url,
            src.settings.api_key,
            job.metadata,
        )
        request = src.poll.build_request(ctx)
        if not _names_job(request.url, job.job_id):
            await self._end(job, "failed", "the job id does not survive as one URL path segment")
            return
        job = dataclasses.replace(job, polls=job.polls + 1)
        self._last_poll[key] = time.monotonic()
        try:
            answer = await request_capped(
                self.http,
                request.method,
                request.url,
                limit=MAX_ANSWER_BYTES,
                deadline_s=POLL_DEADLINE_S,
                refuse_larger=True,
                headers=dict(request.headers),
                timeout=REQUEST_TIMEOUT_S,
            )
        except TooLarge:
            self._count(src, "too_large")
            error = f"the answer is larger than {MAX_ANSWER_BYTES} bytes (not read)"
            await self._again(job, self.clock.now(), error, None)
            return
        except TimeoutError:
            self._count(src, "timeout")
            error = f"no complete answer within {POLL_DEADLINE_S:g} s"
            await self._again(job, self.clock.now(), error, None)
            return
        except httpx.HTTPError as exc:
            self._count(src, "network_error")
            await self._again(job, self.clock.now(), f"{type(exc).__name__}: {exc}"[:300], None)
            return
        await self._answered(job, src, ctx, answer)

    def _spacing_left(self, src: PollSource, key: tuple[str, str]) -> float:
        """Seconds until the job may be asked again under the provider's per-job minimum."""
        last = self._last_poll.get(key)
        if last is None or not src.poll.min_interval_s:
            return 0.0
        return max(0.0, last + src.poll.min_interval_s - time.monotonic())

    def _count(self, src: PollSource, answer: str) -> None:
        self.metrics.polls.labels(src.settings.provider, answer).inc()

    async def _answered(
        self, job: Job, src: PollSource, ctx: PollContext, response: Answer
    ) -> None:
        code, now = response.status, self.clock.now()
        if 200 <= code < 300 or code == 404:
            answer = src.poll.parse_answer(ctx, code, response.body)
            self._count(src, answer.state)
            await self._apply(job, src, answer, response.body, now)
            return
        self._count(src, str(code))
        if code in (429, 503):
            wait = retry_after_s(response.headers.get("retry-after")) or 0.0
            src.key_limit.hold(wait)
            await self._again(job, now, f"the provider answered {code}", wait)
        elif code in (401, 403):
            log.error(
                "poll.unauthorized",
                source=job.source,
                status_code=code,
                fix=f"check [sources.{job.source}] api_key",
            )
            await self._again(
                job, now, f"the provider refused the api_key ({code})", CREDENTIALS_WAIT_S
            )
        elif 300 <= code < 400:
            # Never followed (the api_key would go wherever Location points); a provider
            # moving or a proxy misbehaving is transient until someone fixes base_url.
            error = f"the provider answered {code} (a redirect, not followed; check base_url)"
            await self._again(job, now, error, None)
        elif code >= 500 or code == 408:
            await self._again(job, now, f"the provider answered {code}", None)
        else:
            await self._end(job, "failed", f"the provider answered {code}: {response.excerpt()}")

    async def _apply(
        self, job: Job, src: PollSource, answer: PollAnswer, body: bytes, now: float
    ) -> None:
        if answer.state == DONE and answer.event is not None:
            stored = await self.ingest.submit(answer.event, body, {})
            log.info(
                "poll.finished",
                source=job.source,
                job_id=job.job_id,
                event_id=stored.event_id,
                type=answer.event.type,
                duplicate=stored.duplicate,
                polls=job.polls,
            )
            await self._end(dataclasses.replace(job, last_status=answer.status), "done", None)
        elif answer.state == NOT_FOUND:
            job = dataclasses.replace(job, not_found=job.not_found + 1)
            if job.not_found >= NOT_FOUND_LIMIT:
                await self._end(
                    job,
                    "failed",
                    f"the provider does not know job {job.job_id!r} "
                    f"({job.not_found} answers of 404)",
                )
            elif now >= job.deadline_at:
                await self._expire(job)
            else:
                await self._again(job, now, "the provider answered 404", None)
        else:
            job = dataclasses.replace(job, not_found=0, last_status=answer.status)
            if now >= job.deadline_at:  # the final look found it still running
                await self._expire(job)
                return
            interval = src.next_interval(job.interval_s)
            await self._schedule(job, now, interval, None)

    async def _again(self, job: Job, now: float, error: str, wait_s: float | None) -> None:
        """Poll again later: after `wait_s` if the provider said so, else on the backoff."""
        src = self.sources.get(job.source)
        interval = src.next_interval(job.interval_s) if src else IDLE_RECHECK_S
        grace = src.max_interval_s if src else IDLE_RECHECK_S
        if now >= job.deadline_at + grace:  # no answer at the deadline, nor for a while after
            log.warning("poll.unanswered", source=job.source, job_id=job.job_id, error=error)
            await self._expire(dataclasses.replace(job, last_error=error))
            return
        log.warning(
            "poll.retry",
            source=job.source,
            job_id=job.job_id,
            error=error,
            retry_in_s=round(max(interval, wait_s or 0.0), 1),
        )
        await self._schedule(job, now, max(interval, wait_s or 0.0), error)

    async def _schedule(self, job: Job, now: float, interval: float, error: str | None) -> None:
        """The next poll `interval` from now, but never later than the deadline (the final look
        happens AT the deadline); past the deadline, a plain retry."""
        at = now + interval
        await self._saver.submit(
            dataclasses.replace(
                job,
                next_poll_at=min(at, job.deadline_at) if now < job.deadline_at else at,
                interval_s=interval,
                last_error=error,
                updated_at=now,
            )
        )

    async def _expire(self, job: Job) -> None:
        waited = round(job.deadline_at - job.created_at)
        raw = {
            "reason": "deadline",
            "job_id": job.job_id,
            "deadline_s": waited,
            "last_status": job.last_status,
        }
        event = events.generation_event(
            source=job.source,
            provider=self.settings.sources[job.source].provider,
            job_id=job.job_id,
            status="expired",
            via="poll",
            raw=raw,
            error=f"no outcome within {waited} s (last status: {job.last_status or 'unknown'})",
            metadata=job.metadata,
        )
        stored = await self.ingest.submit(event, json.dumps(raw).encode(), {})
        log.warning(
            "poll.expired",
            source=job.source,
            job_id=job.job_id,
            event_id=stored.event_id,
            polls=job.polls,
        )
        await self._end(job, "expired", None)

    async def _end(self, job: Job, state: str, error: str | None) -> None:
        if state == "failed":
            log.error("poll.failed", source=job.source, job_id=job.job_id, error=error)
        self._last_poll.pop((job.source, job.job_id), None)
        await self._saver.submit(
            dataclasses.replace(job, state=state, last_error=error, updated_at=self.clock.now())
        )


def _names_job(url: str, job_id: str) -> bool:
    """Whether the status URL, as the HTTP client will send it, still has the job id as one
    whole path segment (a client normalises dot segments, which would ask for another path)."""
    try:
        path = httpx.URL(url).raw_path.split(b"?", 1)[0].decode("ascii")
    except (httpx.InvalidURL, UnicodeDecodeError):
        return False
    return job_id in (unquote(segment) for segment in path.split("/"))
