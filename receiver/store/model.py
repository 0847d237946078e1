"""The store's model: what it holds (events, deliveries, jobs) and its roles as Protocols.

Both backends (receiver.store.sqlite, receiver.store.postgres) implement `Store`; callers take
the role they use. This module imports no backend, so the backends can import it.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from receiver.core import masking
from receiver.core.errors import ConfigError
from receiver.core.events import Event
from receiver.core.outputs import MirroredOutput


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to store, with the exact bytes it came from and the sinks its routes chose."""

    event: Event
    raw_body: bytes
    headers: Mapping[str, str]
    sinks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Stored:
    """What storing one NewEvent did."""

    event_id: str  # for a duplicate: the id of the first event with that idempotency key
    duplicate: bool
    deliveries: int  # delivery rows created


@dataclass(frozen=True, slots=True)
class Due:
    """A claimed delivery: the event (JSON with `raw`) to send to `sink`."""

    delivery_id: int
    sink: str
    attempts: int  # attempts made before this one
    event: dict[str, Any]
    lease_until: float = 0.0  # the claim is ours until then (renew it for a longer send)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one delivery attempt, and the delivery's state after it."""

    delivery_id: int
    sink: str
    status: str  # "delivered" | "pending" (retry at next_attempt_at) | "dead"
    attempts: int  # attempts made, this one included
    next_attempt_at: float
    started_at: float
    duration_s: float
    status_code: int | None = None
    error: str | None = None
    mirrored: tuple[MirroredOutput, ...] = ()  # outputs a mirroring sink stored on this attempt


def removed_sink_error(sink: str) -> str:
    """The error a pending delivery dies with when its sink was taken out of the config."""
    return f"sink {sink} is no longer in the config"


JOB_STATES = ("watching", "done", "failed", "expired")
DELIVERY_STATUSES = ("pending", "delivered", "dead")


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a list or a replay covers; None matches anything.

    `since` (inclusive) and `until` (exclusive) are times in the stored form of `received_at`
    (UTC, `2026-11-22T10:00:59.000000Z`), so they compare as strings."""

    source: str | None = None
    type: str | None = None
    job_id: str | None = None
    since: str | None = None
    until: str | None = None


@dataclass(frozen=True, slots=True)
class ReplayScope:
    """The (event, sink) pairs a bulk replay covers, fixed when it is planned.

    With `delivery_status`: the pairs whose LATEST delivery has that status (a dead row that
    was replayed since is no longer dead), to `sinks`. Without: every event matching the
    filter, to `routes[(source, type)]`. Only rows and events up to `upto` (a delivery id, or
    an event sequence number from `replay_horizon`) count, so what arrives meanwhile is left out.
    """

    filter: EventFilter
    delivery_status: str | None
    sinks: tuple[str, ...]
    routes: Mapping[tuple[str, str], tuple[str, ...]]
    upto: int


@dataclass(frozen=True, slots=True)
class ReplayChunk:
    """What one `replay_chunk` call did; `after` is None once the scope is exhausted."""

    after: int | None
    event_ids: frozenset[str]  # the events it added deliveries for
    deliveries: int


@dataclass(frozen=True, slots=True)
class Job:
    """A watched job: polled until it ends, or until its webhook arrives."""

    source: str
    job_id: str
    state: str  # one of JOB_STATES
    metadata: dict[str, Any]
    created_at: float
    deadline_at: float
    next_poll_at: float
    interval_s: float = 0.0  # the last wait between polls (backoff grows it)
    polls: int = 0
    not_found: int = 0  # 404 answers in a row
    last_status: str | None = None  # the provider's last status word
    last_error: str | None = None
    updated_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "job_id": self.job_id,
            "state": self.state,
            "metadata": self.metadata,
            "created_at": self.created_at,
            "deadline_at": self.deadline_at,
            "next_poll_at": self.next_poll_at,
            "polls": self.polls,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one retention batch removed (or, in a dry run, would remove). `after` is where the
    next batch starts (an event id); None once the pass has looked at every old event."""

    events: int = 0
    deliveries: int = 0
    attempts: int = 0
    mirrors: int = 0
    jobs: int = 0
    after: str | None = None

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            self.events + other.events,
            self.deliveries + other.deliveries,
            self.attempts + other.attempts,
            self.mirrors + other.mirrors,
            self.jobs + other.jobs,
            other.after,
        )

    def to_json(self) -> dict[str, int]:
        return {
            "events": self.events,
            "deliveries": self.deliveries,
            "attempts": self.attempts,
            "mirrors": self.mirrors,
            "jobs": self.jobs,
        }


def age_bound(older_than: float) -> tuple[str, str]:
    """(event id bound, received_at bound) for events received before unix time `older_than`.
    Event ids are ULIDs of their receipt time, so the id bound lets a batch walk the primary
    key instead of needing an index on received_at; received_at is still checked."""
    from receiver.core.events import new_event_id

    ms = max(0, int(older_than * 1000))
    lowest = "evt_" + new_event_id(now_ms=ms)[4:14] + "0" * 16  # the ms part, random bits 0
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(older_than)))
    return lowest, f"{when}.{int((older_than % 1) * 1_000_000):06d}Z"


class EventLog(Protocol):
    """The append-only event log: webhooks and polls write, the API, UI and CLI read."""

    async def write_events(self, items: Sequence[NewEvent]) -> list[Stored]:
        """Store events and their pending deliveries in ONE transaction, deduplicated by
        idempotency key; a non-terminal event after a terminal one of its job gets no
        deliveries. Returns one Stored per item, in order."""

    async def get_event(self, event_id: str) -> dict[str, Any] | None:
        """The event JSON (with `raw`) and its deliveries, or None."""

    async def list_events(
        self, where: EventFilter, before: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Events (JSON without `raw`), newest first, with ids below the cursor `before`."""

    async def count_events(self) -> int: ...

    async def latest_statuses(self, event_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """event id → {sink: status of its latest delivery}, for one page of events (the
        web UI's at-a-glance column); looked up by event id only, never by scanning."""


class DeliveryQueue(Protocol):
    """Delivery rows as a queue of leased claims: sink runners take, send and settle them."""

    async def claim_due(
        self,
        sink: str,
        now: float,
        limit: int,
        lease_s: float | None = None,
        *,
        waiting_for: str | None = None,
    ) -> list[Due]:
        """Lease up to `limit` pending deliveries to `sink` due by `now`, oldest first, that no
        live lease holds, to this store's owner for `lease_s` (default: the store's). Another
        process can take them only once the lease has ended; taking them again is no attempt.
        With `waiting_for` (a sink name), only rows whose event has no pending delivery to that
        sink (its mirror is settled: delivered or dead)."""

    async def next_due_at(self, sink: str, *, waiting_for: str | None = None) -> float | None:
        """When the earliest unleased pending delivery to `sink` is due (None: there is none);
        `waiting_for` as in claim_due."""

    async def mirrors_of(
        self, event_ids: Sequence[str], sink: str
    ) -> dict[str, list[MirroredOutput]]:
        """Where `sink` mirrored each event's outputs: event id → its outputs' copies."""

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Store attempts and, for rows this owner still holds, the delivery states, in ONE
        transaction; the leases end."""

    async def renew(self, delivery_ids: Sequence[int], until: float) -> int:
        """Extend this owner's leases (a long send); rows it no longer holds are left alone.
        Returns how many were extended."""

    async def release(self, delivery_ids: Sequence[int]) -> None:
        """Give this owner's claimed rows back unchanged (a send cancelled at shutdown)."""

    async def retry_delivery(self, delivery_id: int, now: float) -> tuple[dict[str, Any], bool]:
        """Put a delivered or dead row back to pending, due at `now`, attempts kept. Returns
        the row and whether it changed (False: it was pending already). KeyError if unknown."""

    async def dead_letter_removed_sinks(
        self, configured: Collection[str], limit: int, now: float
    ) -> dict[str, int]:
        """Make up to `limit` pending deliveries to sinks NOT in `configured` dead, leased ones
        too (their lease ends), in ONE transaction. Each is recorded as any dead row is: its
        last error (and a final attempt, at `now`, with no status code and no duration) is
        `removed_sink_error(sink)`; its attempt count stays (nothing was sent). Returns sink →
        rows made dead; fewer than `limit` in all means none was left."""

    async def list_deliveries(
        self,
        status: str | None = None,
        sink: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Delivery rows by id, starting after the cursor `after`."""

    async def delivery_counts(self) -> dict[tuple[str, str], int]:
        """(sink, status) → number of deliveries."""

    async def pending_stats(self) -> tuple[int, float | None]:
        """The number of pending deliveries and the created_at of the oldest one."""

    async def sink_stats(
        self, sinks: Sequence[str], since: float, cap: int
    ) -> dict[str, SinkStats]:
        """Each sink's health for the web UI: pending deliveries, the oldest one, and the
        deliveries that ended (delivered, dead) since `since`. The pending count stops at
        `cap`, and at most the newest `cap` attempts are read, so a page view stays cheap on
        a store with millions of rows."""


class JobTable(Protocol):
    """Watched jobs and their poll schedule."""

    async def watch_job(self, job: Job) -> tuple[Job, bool]:
        """Store a new watched job; if (source, job_id) is known, return the stored one.
        The bool says whether it was new."""

    async def due_jobs(self, now: float, limit: int, exclude: set[tuple[str, str]]) -> list[Job]:
        """Watching jobs whose next poll is due by `now`, soonest first."""

    async def next_job_due_at(self) -> float | None: ...

    async def save_jobs(self, jobs: Sequence[Job]) -> None:
        """Overwrite these jobs' state and schedule, in ONE transaction."""

    async def get_job(self, source: str, job_id: str) -> Job | None: ...

    async def list_jobs(
        self,
        source: str | None = None,
        state: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs ordered by (source, job_id), starting after the cursor `after`."""

    async def delete_job(self, source: str, job_id: str) -> bool: ...

    async def count_jobs(self, state: str) -> int:
        """How many jobs are in `state` (the watched-jobs gauge)."""


class ReplayLog(Protocol):
    """New delivery rows for stored events, planned against a fixed horizon."""

    async def add_replays(self, pairs: Sequence[tuple[str, str]], now: float) -> list[int]:
        """New pending deliveries for (event id, sink) pairs, in ONE transaction; each is linked
        to the latest earlier delivery of its pair. Returns their ids."""

    async def replay_horizon(self) -> tuple[int, int]:
        """The newest event sequence number and delivery id now (bounds for a ReplayScope)."""

    async def event_kinds(self, where: EventFilter, upto: int) -> dict[tuple[str, str], int]:
        """(source, type) → number of matching events up to sequence number `upto`."""

    async def count_latest(self, scope: ReplayScope) -> tuple[int, int]:
        """For a scope with `delivery_status`: (events, deliveries) it covers."""

    async def replay_chunk(
        self, scope: ReplayScope, after: int, limit: int, now: float
    ) -> ReplayChunk:
        """Add replay deliveries for the next `limit` events or rows of `scope` after the
        position `after` (0 to start), in ONE transaction."""


class Retention(Protocol):
    """Removing what is old enough (receiver.retention)."""

    async def prune(
        self, older_than: float, after: str | None, limit: int, *, dry_run: bool = False
    ) -> Pruned:
        """One retention batch: of the next `limit` events after the event id `after` (None:
        from the start) received before unix time `older_than`, those without a pending
        delivery go, with their deliveries, attempts and mirror records, in ONE short
        transaction (nothing is written when nothing goes). `dry_run` only counts."""

    async def prune_jobs(self, older_than: float, limit: int, *, dry_run: bool = False) -> int:
        """Remove up to `limit` watched jobs that ended (done, failed, expired) and were last
        updated before `older_than`; returns how many went. `dry_run` removes nothing and
        counts every such job, whatever `limit` (a pass could not page past a batch)."""

    async def reclaim_space(self) -> None:
        """Give space freed by pruning back to the operating system where the backend can
        without blocking writers for long (SQLite: incremental vacuum; PostgreSQL: nothing,
        autovacuum makes it reusable)."""

    async def database_size(self) -> int:
        """Bytes the database takes (SQLite: the file's pages; PostgreSQL: the database)."""


class Coordination(Protocol):
    """What several processes on one store agree through: leases and change notices."""

    async def hold_lease(
        self, name: str, owner: str, ttl_s: float
    ) -> tuple[bool, float | None]:
        """Take the named lease for `ttl_s` if it is free or its holder's time ran out, or
        extend it if `owner` holds it. Returns whether `owner` holds it now (the poller's
        leader) and, when this call took it over from another holder, when that one's ended."""

    async def release_lease(self, name: str, owner: str) -> None:
        """Give the named lease up, if `owner` holds it (a clean stop hands over at once)."""

    async def wait_for_change(self, timeout_s: float) -> bool:
        """Return True soon after anyone (any process) commits to the store, False after
        `timeout_s` without a commit: how idle workers in other processes hear of new rows."""


class Store(EventLog, DeliveryQueue, JobTable, ReplayLog, Retention, Coordination, Protocol):
    """A whole store (SQLite or PostgreSQL): every role, and its lifecycle. Each consumer
    takes the role it uses (receiver.delivery a DeliveryQueue, receiver.ingest an EventLog)."""

    async def open(self) -> None:
        """Connect and migrate the schema to the current version."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot commit a (trivial) write: readiness means a webhook
        arriving now would be stored."""


def new_owner_id() -> str:
    """Who holds a lease: this host and process, plus a random part (pids are reused)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_is_dead(owner: str) -> bool:
    """True when `owner` was a process on this host that no longer runs, so its leases can be
    ended at once instead of waiting them out (a restart after a crash)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname()[:40] or not pid.isascii() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return False
    return False


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class StoreUnusable(ConfigError):
    """The database cannot be opened or used at all (a directory, garbage, locked, newer
    schema, no permission); the message names the file and the fix. Start-up exits with 2."""

    code = "store_unusable"


class SchemaTooNew(StoreUnusable):
    """The database was written by a newer hookyard; this one must not touch it."""


def database_password(database: str) -> str | None:
    """The password in a database URL, if any: a secret that logs must never show."""
    try:
        return urlsplit(database).password
    except ValueError:
        return None


def display_url(database: str) -> str:
    """The database URL safe to print: its userinfo and query values masked (a sqlite:///
    path, which has neither, as it is)."""
    return masking.mask_url(database) if "@" in database or "?" in database else database


@dataclass(frozen=True, slots=True)
class SinkStats:
    """One sink's health. A count equal to the `cap` asked for means "at least that many"."""

    pending: int
    oldest_pending_at: float | None  # created_at of the oldest pending delivery
    delivered: int  # deliveries delivered since the time asked for
    dead: int  # deliveries given up since the time asked for
    exact: bool = True  # False: more attempts than the cap since then; the two are lower bounds
