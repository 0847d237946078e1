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

    async def count_events(self) -> int: ...

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
