"""Replay: new delivery rows for stored events, sent by the sink runners at each sink's pace.

A replay never talks to a sink. It adds plain pending deliveries (cause `replay`, `replay_of`
the latest earlier delivery of the same event and sink), and the sink runners send them under
the sink's concurrency cap, rate limit and circuit breaker like any other row — so replaying
thousands of events after an outage is paced, not a burst. The event keeps its id, so the HTTP
sink's `webhook-id` is the one the receiver saw the first time and it can dedupe.

Shared by the admin API and the CLI (which opens the SQLite file directly; a running server's
runners notice the new rows at their next idle re-check).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from receiver.core.errors import InvalidRequest, NotFound
from receiver.store import DELIVERY_STATUSES, EventFilter, ReplayScope, Store

CHUNK = 1000  # events or rows per transaction
# ASCII digits only: \d (and float()) also take `٣` and other scripts' digits.
_SECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?", re.ASCII)
REPLAY_FIELDS = (
    "source",
    "type",
    "job_id",
    "since",
    "until",
    "delivery_status",
    "sinks",
    "dry_run",
)

Route = Callable[[str, str], tuple[str, ...]]
Progress = Callable[[int, int], None]


def parse_time(name: str, value: object) -> str:
    """An ISO 8601 time (a naive one is UTC) or unix seconds, as the stored form of
    `received_at`; anything else is a 400 naming `name`."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            when = datetime.fromtimestamp(value, UTC)
        elif isinstance(value, str) and _SECONDS.fullmatch(value):
            when = datetime.fromtimestamp(float(value), UTC)
        elif isinstance(value, str):
            when = datetime.fromisoformat(value)
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        else:
            raise TypeError
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (TypeError, ValueError, OverflowError, OSError):
        raise InvalidRequest(
            f"{name} must be an ISO 8601 time such as 2026-11-22T10:00:59Z, or unix seconds"
        ) from None


def event_filter(values: Mapping[str, Any]) -> EventFilter:
    """The EventFilter of query parameters or a JSON body (source, type, job_id, since, until)."""
    strings = {}
    for key in ("source", "type", "job_id"):
        value = values.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidRequest(f"{key} must be a non-empty string")
        strings[key] = value
    since, until = values.get("since"), values.get("until")
    return EventFilter(
        source=strings["source"],
        type=strings["type"],
        job_id=strings["job_id"],
        since=None if since is None else parse_time("since", since),
        until=None if until is None else parse_time("until", until),
    )


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """A bulk replay as asked: which events or deliveries, to which sinks, for real or not."""

    filter: EventFilter
    delivery_status: str | None = None
    sinks: tuple[str, ...] | None = None
    dry_run: bool = False

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ReplayRequest:
        """From the body of POST /v1/replay; unknown keys are refused (a typo must not turn
        a narrow replay into a replay of everything)."""
        unknown = sorted(set(body) - set(REPLAY_FIELDS))
        if unknown:
            raise InvalidRequest(
                f"unknown field {unknown[0]!r}; the fields are {', '.join(REPLAY_FIELDS)}"
            )
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise InvalidRequest("dry_run must be true or false")
        return cls(
            event_filter(body),
            delivery_status(body.get("delivery_status"), "delivery_status"),
            sink_list(body.get("sinks")),
            dry_run,
        )


def delivery_status(value: object, name: str) -> str | None:
    """A delivery status (pending, delivered, dead) given as `name`, or None."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in DELIVERY_STATUSES:
        raise InvalidRequest(f"{name} must be one of {', '.join(DELIVERY_STATUSES)}")
    return value


def sink_list(value: object) -> tuple[str, ...] | None:
    """`sinks` from a JSON body: absent, or a non-empty list of names (deduplicated)."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise InvalidRequest("sinks must be a non-empty list of sink names")
    return tuple(dict.fromkeys(value))


@dataclass(frozen=True, slots=True)
class Counts:
    """What a bulk replay covers (a dry run) or did."""

    events: int
    deliveries: int
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "events": self.events, "deliveries": self.deliveries}


class Replayer:
    """Plans and writes replays against one store, with the config's routes and sinks."""

    def __init__(self, store: Store, route: Route, sinks: Collection[str]) -> None:
        self.store = store
        self.route = route
        self.sinks = tuple(sinks)

    def known_sinks(self, names: Sequence[str]) -> tuple[str, ...]:
        unknown = [n for n in names if n not in self.sinks]
        if unknown:
            configured = ", ".join(self.sinks) or "none"
            raise InvalidRequest(f"sinks: no sink named {unknown[0]!r}; configured: {configured}")
        return tuple(names)

    async def replay_event(
        self, event_id: str, sinks: Sequence[str] | None = None
    ) -> list[tuple[int, str]]:
        """Replay one event to `sinks` (default: where the routes send it now); the new
        (delivery id, sink) pairs."""
        event = await self.store.get_event(event_id)
        if event is None:
            raise NotFound(f"no event {event_id!r}")
        targets = (
            self.known_sinks(sinks)
            if sinks is not None
            else self.route(event["source"], event["type"])
        )
        if not targets:
            raise InvalidRequest(
                f"no route sends {event['type']} from {event['source']} to a sink now; "
                "name the sinks to replay it to"
            )
        ids = await self.store.add_replays([(event_id, s) for s in targets], time.time())
        return list(zip(ids, targets, strict=True))

    async def plan(self, request: ReplayRequest) -> tuple[ReplayScope, Counts]:
        """The scope of a bulk replay, fixed now, and how many events and deliveries it covers."""
        named = None if request.sinks is None else self.known_sinks(request.sinks)
        events_upto, deliveries_upto = await self.store.replay_horizon()
        if request.delivery_status is not None:
            scope = ReplayScope(
                request.filter, request.delivery_status, named or self.sinks, {}, deliveries_upto
            )
            events, deliveries = await self.store.count_latest(scope)
            return scope, Counts(events, deliveries, dry_run=True)
        kinds = await self.store.event_kinds(request.filter, events_upto)
        routes = {kind: named or self.route(*kind) for kind in kinds}
        scope = ReplayScope(request.filter, None, named or (), routes, events_upto)
        routed = {kind: n for kind, n in kinds.items() if routes[kind]}
        return scope, Counts(
            sum(routed.values()),
            sum(n * len(routes[kind]) for kind, n in routed.items()),
            dry_run=True,
        )

    async def run(self, scope: ReplayScope, progress: Progress | None = None) -> Counts:
        """Write the replay deliveries of `scope`, CHUNK at a time, calling
        `progress(deliveries, events)` with the totals so far after each chunk."""
        after: int | None = 0
        events: set[str] = set()
        deliveries = 0
        while after is not None:
            chunk = await self.store.replay_chunk(scope, after, CHUNK, time.time())
            after = chunk.after
            events |= chunk.event_ids
            deliveries += chunk.deliveries
            if progress is not None and chunk.deliveries:
                progress(deliveries, len(events))
        return Counts(len(events), deliveries)

    def sinks_of(self, scope: ReplayScope) -> tuple[str, ...]:
        """The sinks a scope can add rows for (the runners to wake)."""
        if scope.sinks:
            return scope.sinks
        return tuple(dict.fromkeys(s for sinks in scope.routes.values() for s in sinks))
