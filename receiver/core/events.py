"""The normalized event: what sinks receive and what the admin API shows (DESIGN.md)."""

from __future__ import annotations

import calendar
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

QUEUED = "generation.queued"
PROCESSING = "generation.processing"
COMPLETED = "generation.completed"
FAILED = "generation.failed"
EXPIRED = "generation.expired"
UNRECOGNIZED = "webhook.unrecognized"
RECEIVED = "webhook.received"

EVENT_TYPES = (QUEUED, PROCESSING, COMPLETED, FAILED, EXPIRED, UNRECOGNIZED, RECEIVED)

# Our status words, in the order a job moves through them.
STATUS_OF_TYPE = {
    QUEUED: "queued",
    PROCESSING: "processing",
    COMPLETED: "completed",
    FAILED: "failed",
    EXPIRED: "expired",
}
TYPE_OF_STATUS = {status: type_ for type_, status in STATUS_OF_TYPE.items()}
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired"})

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Event ids must be unique and sortable, not secret: a PRNG seeded from the OS is enough and
# avoids a getrandom() system call per id on the ingest path.
_random = random.Random(os.urandom(32))


# Two Crockford characters (10 bits) per lookup: a ULID's 130 bits in 13 lookups, not 26.
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
# The first 10 characters (2 zero bits, the 48 bits of milliseconds) change once a
# millisecond: kept for the next id, which under load is usually made in the same one.
_time_part: tuple[int, str] = (-1, "")


def new_event_id(now_ms: int | None = None) -> str:
    """`evt_` + a ULID: 48 bits of milliseconds then 80 random bits, so ids sort by time."""
    global _time_part
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    p = _PAIRS
    known_ms, head = _time_part
    if known_ms != ms:
        head = "".join(("evt_", p[ms >> 40], p[(ms >> 30) & 1023], p[(ms >> 20) & 1023],
                        p[(ms >> 10) & 1023], p[ms & 1023]))
        _time_part = (ms, head)
    b = _random.getrandbits(80)
    return "".join((head, p[b >> 70], p[(b >> 60) & 1023], p[(b >> 50) & 1023],
                    p[(b >> 40) & 1023], p[(b >> 30) & 1023], p[(b >> 20) & 1023],
                    p[(b >> 10) & 1023], p[b & 1023]))


# Event ids and received_at are taken in the same moment, so a time bounds the ids; ids kept
# from elsewhere (db copy, clocks that stepped) may be off by a little, hence this much slack
# on every bound drawn from a time.
ID_TIME_SLACK_MS = 10 * 60 * 1000


def event_id_at(received_at: str, slack_ms: int) -> str | None:
    """The smallest event id `new_event_id` makes `slack_ms` after `received_at` (the stored
    form, UTC: 2026-11-22T10:00:59.123456Z); None when `received_at` is not in that form."""
    try:
        seconds = calendar.timegm(time.strptime(received_at[:19], "%Y-%m-%dT%H:%M:%S"))
        millis = int(received_at[20:23] or 0)
    except ValueError:
        return None
    ms = max(0, seconds * 1000 + millis + slack_ms)
    return new_event_id(ms)[:14] + "0" * 16  # the time's 10 characters, no random bits


_second_cache: tuple[int, str] = (0, "")


def utc_now_iso() -> str:
    """UTC now as `2026-11-22T10:00:59.123456Z` (the seconds part is formatted once a second)."""
    global _second_cache
    now = time.time()
    second = int(now)
    if _second_cache[0] != second:
        _second_cache = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second_cache[1]}.{int((now - second) * 1_000_000):06d}Z"


@dataclass(slots=True)
class Event:
    """One normalized event. `raw` is the provider's payload as received (parsed JSON).

    Treat it as immutable; it is not frozen only because a frozen dataclass costs twice as
    much to create, and one is created per webhook."""

    id: str
    type: str
    source: str
    provider: str
    job_id: str | None
    status: str | None
    idempotency_key: str
    via: str = "webhook"
    outputs: tuple[str, ...] = ()
    error: str | None = None
    cost: float | None = None
    model: str | None = None
    received_at: str = field(default_factory=utc_now_iso)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    raw: Any = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "provider": self.provider,
            "job_id": self.job_id,
            "status": self.status,
            "outputs": list(self.outputs),
            "error": self.error,
            "cost": self.cost,
            "model": self.model,
            "received_at": self.received_at,
            "via": self.via,
            "idempotency_key": self.idempotency_key,
            "metadata": dict(self.metadata),
            "raw": self.raw,
        }


def generation_event(
    *,
    source: str,
    provider: str,
    job_id: str,
    status: str,
    via: str,
    raw: Any,
    outputs: Sequence[str] = (),
    error: str | None = None,
    cost: float | None = None,
    model: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Event:
    """A `generation.*` event; `status` is one of our status words (see STATUS_OF_TYPE)."""
    return Event(
        id=new_event_id(),
        type=TYPE_OF_STATUS[status],
        source=source,
        provider=provider,
        job_id=job_id,
        status=status,
        idempotency_key=f"{source}:{job_id}:{status}",
        via=via,
        outputs=tuple(outputs),
        error=error,
        cost=cost,
        model=model,
        metadata=dict(metadata or {}),
        raw=raw,
    )


def other_event(
    *,
    type_: str,
    source: str,
    provider: str,
    idempotency_key: str,
    raw: Any,
    job_id: str | None = None,
    status: str | None = None,
    via: str = "webhook",
) -> Event:
    """A `webhook.unrecognized` or `webhook.received` event: stored, never dropped."""
    return Event(
        id=new_event_id(),
        type=type_,
        source=source,
        provider=provider,
        job_id=job_id,
        status=status,
        idempotency_key=idempotency_key,
        via=via,
        raw=raw,
    )
