"""Running the app under uvicorn: open-file budget, connection cap, request timeout.

uvicorn bounds an idle keep-alive connection (after a response) but not a fresh one: a client
that connects and sends nothing, or sends a request head one byte at a time, holds a file
descriptor for as long as it likes. With the process at systemd's default of 1,024 open files,
about a thousand such sockets made `accept()` fail and every signed webhook with it, silently.
So, per connection:

* a complete request (head and body) must arrive within `request_timeout_s` of the connection
  opening, or of the request's first byte on a kept-alive connection; otherwise it is closed;
* at most `max_connections` are open, below the open-file limit with a reserve for the
  database, the log and outbound connections (polls, sinks, JWKS). At the cap a new connection
  closes the OLDEST connection that has no complete request (an idle one or a trickler), so a
  flood of idle sockets cannot lock a real webhook out; only when every connection is busy
  with a request is the new one refused. Either way a warning is logged (at most one line per
  `LOG_EVERY_S`) and `hookyard_connections_refused_total{reason}` counts it.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from receiver.core.errors import ConfigError
from receiver.metrics import Metrics

log = structlog.get_logger("hookyard.server")
T = TypeVar("T")

LOG_EVERY_S = 10.0
MIN_RESERVE = 128  # files kept for the database (file, -wal, -shm, two connections), the log,
# the poll pool (64) and the sinks' connections; a quarter of the limit when that is more


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop where it is installed (it comes with uvicorn[standard]), as
    uvicorn's `loop = "auto"` runs `serve`: the worker's loop runs every callback, wake-up and
    socket of delivery and polling, cheaper in uvloop (bench/delivery/drain.py: ~650 -> ~600 µs
    of the loop's thread per delivery, when sinks' POSTs still ran on the loop)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


# Cyclic garbage collection for the long-running commands: a young-generation pass every
# 50,000 container allocations instead of CPython's 700, and the objects of start-up (modules,
# config, routes) frozen out of every pass. Measured under wrk (gc.callbacks): with the
# defaults the web process ran 400+ passes in 8 s, 0.34 s of CPU (~9 us per webhook); tuned,
# fewer than 20 (bench/RESULTS.md). Memory held by unreachable cycles between passes stays
# small: most objects are freed by reference counting at once.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Call once start-up is done (`hookyard serve`, `hookyard worker`), not in tests."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def raise_file_limit(wanted: int = 65536) -> int:
    """Raise this process's soft open-file limit towards the hard one (systemd's advice for
    services that handle many sockets); return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else wanted


def connection_budget(file_limit: int, configured: int | None) -> int:
    """How many client connections may be open at once under `file_limit` open files."""
    reserve = max(MIN_RESERVE, file_limit // 4)
    room = file_limit - reserve
    if configured is None:
        if room < 16:
            raise ConfigError(
                f"the open-file limit is {file_limit}, too low to serve: raise it "
                "(LimitNOFILE=65536 in the systemd unit, ulimit -n 65536 in a shell)"
            )
        return room
    if configured > room:
        raise ConfigError(
            f"[server] max_connections = {configured} leaves too few of the {file_limit} open "
            f"files for the database, logs and outbound connections (at most {room}): lower "
            "it, or raise the limit (LimitNOFILE=65536 in the systemd unit)"
        )
    return configured


class ConnectionGuard:
    """What every connection of one server shares: the cap, the timeout and the bookkeeping."""

    def __init__(self, max_connections: int, request_timeout_s: float, metrics: Metrics) -> None:
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self.metrics = metrics
        # Connections with no complete request, oldest first (a dict keeps insertion order).
        self.waiting: dict[GuardedHttpTools, None] = {}
        self._unlogged: dict[str, int] = {}
        self._logged_at = float("-inf")

    def protocol_class(self) -> type[GuardedHttpTools]:
        """The uvicorn `http` protocol class bound to this guard."""
        return type("HookyardHttp", (GuardedHttpTools,), {"guard": self})

    def admit(self, new: GuardedHttpTools, open_now: int) -> bool:
        """Make room for `new` (open_now counts it): evict the oldest waiting connection, or
        refuse `new` when every other one is busy."""
        if open_now <= self.max_connections:
            return True
        victim = next((c for c in self.waiting if c is not new), None)
        if victim is None:
            self.closed("full")
            return False
        self.waiting.pop(victim, None)
        victim.close()
        self.closed("idle_evicted")
        return True

    def closed(self, reason: str) -> None:
        self.metrics.connections_refused.labels(reason).inc()
        self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            counts, self._unlogged = self._unlogged, {}
            log.warning(
                "connections.closed",
                counts=counts,
                max_connections=self.max_connections,
                request_timeout_s=self.request_timeout_s,
                fix="many clients hold connections without sending a request: check for a "
                "scan or a flood; raise [server] max_connections (and LimitNOFILE) if the "
                "load is real",
            )


class CoalescingTransport:
    """A connection's transport whose writes of one event-loop turn go out as one.

    uvicorn writes a response's head and its body with a write each, and each is a system call
    (uvloop writes at once when nothing is queued): two per webhook answer, the largest single
    cost in the web process's profile. Here the first write of a turn is held and sent, with
    whatever else was written in the same turn, at the end of it (`call_soon`): one system
    call per answer. Everything else is the real transport's; `close` sends what is held first."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(data)

    def flush(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:  # asked on every request: not through __getattr__
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request timeout and the connection cap."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self.guard.waiting[self] = None
        self._arm()
        if not self.guard.admit(self, len(self.connections)):
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.waiting.pop(self, None)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.guard.waiting.setdefault(self, None)
        if self._request_timer is None:
            self._arm()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self.guard.waiting.pop(self, None)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self.guard.waiting[self] = None  # kept alive and idle: first to go at the cap

    def close(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._request_timer = self.loop.call_later(
            self.guard.request_timeout_s, self._request_timed_out
        )

    def _disarm(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        self.guard.waiting.pop(self, None)
        self.guard.closed("request_timeout")
        self.close()
