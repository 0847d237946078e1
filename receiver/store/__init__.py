"""The append-only event log and its delivery rows, behind one small interface.

`open_store(url)` picks the backend from the database URL. SQLite (aiosqlite, WAL) is the
embedded default; a PostgreSQL backend will implement the same Protocol.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from receiver.errors import ConfigError
from receiver.events import Event


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


JOB_STATES = ("watching", "done", "failed", "expired")


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


class Store(Protocol):
    """Event log storage. Every method is safe to call from one event loop."""

    async def open(self) -> None:
        """Connect and migrate the schema to the current version."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot answer a trivial query."""

    async def write_events(self, items: Sequence[NewEvent]) -> list[Stored]:
        """Store events and their pending deliveries in ONE transaction, deduplicated by
        idempotency key; a non-terminal event after a terminal one of its job gets no
        deliveries. Returns one Stored per item, in order."""

    async def claim_due(self, sink: str, now: float, limit: int) -> list[Due]:
        """Up to `limit` pending deliveries to `sink` due by `now`, oldest first, that nobody
        holds; they stay held until their outcome is recorded or they are released."""

    async def next_due_at(self, sink: str) -> float | None:
        """When the earliest unheld pending delivery to `sink` is due (None: there is none)."""

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Store attempts and delivery states in ONE transaction, then release the rows."""

    def release(self, delivery_ids: Sequence[int]) -> None:
        """Give claimed rows back unchanged (a send cancelled at shutdown)."""

    async def watch_job(self, job: Job) -> tuple[Job, bool]:
        """Store a new watched job; if (source, job_id) is known, return the stored one.
        The bool says whether it was new."""

    async def due_jobs(self, now: float, limit: int, exclude: set[tuple[str, str]]) -> list[Job]:
        """Watching jobs whose next poll is due by `now`, soonest first."""

    async def next_job_due_at(self) -> float | None: ...

    async def save_job(self, job: Job) -> None:
        """Overwrite the job's state and schedule."""

    async def finish_jobs(self, keys: Sequence[tuple[str, str]], now: float) -> None:
        """Mark these watching jobs done (their terminal event is stored)."""

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

    async def count_events(self) -> int: ...

    async def delivery_counts(self) -> dict[tuple[str, str], int]:
        """(sink, status) → number of deliveries."""

    async def get_event(self, event_id: str) -> dict[str, Any] | None:
        """The event JSON (with `raw`) and its deliveries, or None."""


def is_outage(exc: BaseException) -> bool:
    """True when the store itself failed (locked, disk, connection), not one item's data."""
    return isinstance(exc, sqlite3.OperationalError | OSError | ConnectionError)


def open_store(database: str) -> Store:
    """The Store for a `database` URL from the config."""
    if database.startswith("sqlite:///"):
        from receiver.store.sqlite import SqliteStore

        return SqliteStore(database.removeprefix("sqlite:///"))
    raise ConfigError(f"database {database!r}: only sqlite:///PATH is supported")
