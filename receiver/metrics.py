"""Prometheus metrics at GET /metrics (text format, no token: scrape from your network only).

One registry per app (not the process-global one), so several apps in one process (tests)
never collide. Gauges about the store (pending deliveries, age of the oldest) are read from the
store when scraped, not kept up to date on the hot path.

With several processes (`hookyard serve --workers N`, or web and worker processes started with
the same PROMETHEUS_MULTIPROC_DIR) every process writes its values to files in that directory
(prometheus_client's multiprocess mode) and a scrape of any process adds them all up.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from receiver.core.loops import running_loop

CONTENT_TYPE = CONTENT_TYPE_LATEST
GaugeMode = Literal["mostrecent", "max"]  # the multiprocess modes the gauges below use
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Every metric hookyard exports."""

    def __init__(self, sources: Iterable[str] = ()) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)

        def counter(name: str, doc: str, labels: Sequence[str]) -> Counter:
            return Counter(name, doc, labels, registry=r)

        def gauge(name: str, doc: str, labels: Sequence[str], mode: GaugeMode) -> Gauge:
            # mode: how a scrape in multiprocess mode combines the processes' values
            return Gauge(name, doc, labels, registry=r, multiprocess_mode=mode)

        self.webhooks = counter(
            "hookyard_webhooks",
            "Webhooks received, by source and outcome (new, duplicate, "
            "confirming, rejected) and, for rejections, the error code",
            ["source", "outcome", "reason"],
        )
        self.request_seconds = Histogram(
            "hookyard_webhook_request_seconds",
            "Time from request to answer on /hooks/{source}",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.deliveries = counter(
            "hookyard_deliveries",
            "Delivery attempts by sink and outcome (delivered, retry, dead)",
            ["sink", "outcome"],
        )
        # Read from the store at scrape time: the latest reading wins across processes.
        self.pending = gauge(
            "hookyard_deliveries_pending",
            "Delivery rows not yet delivered or dead",
            [],
            mode="mostrecent",
        )
        self.oldest_pending = gauge(
            "hookyard_oldest_pending_delivery_age_seconds",
            "Age of the oldest pending delivery (0 when none)",
            [],
            mode="mostrecent",
        )
        # Set by the process that runs the sink (a worker), whenever the breaker changes.
        self.breaker_open = gauge(
            "hookyard_sink_circuit_open",
            "1 while a sink's circuit breaker holds its deliveries back",
            ["sink"],
            mode="max",
        )
        self.polls = counter(
            "hookyard_polls",
            "Status polls by provider and answer (running, "
            "done, not_found, or the HTTP status / error class)",
            ["provider", "answer"],
        )
        self.jobs_watched = gauge(
            "hookyard_jobs_watched", "Jobs being watched", [], mode="mostrecent"
        )
        self.connections_refused = counter(
            "hookyard_connections_refused",
            "Connections closed by the connection cap (reason: full = a new one refused, "
            "idle_evicted = an idle one closed to admit a new one) or by the request timeout "
            "(reason: request_timeout)",
            ["reason"],
        )
        self.pruned = counter(
            "hookyard_pruned_rows",
            "Rows removed by retention, by table (events, deliveries, attempts, mirrors, jobs)",
            ["table"],
        )
        self.database_bytes = gauge(
            "hookyard_database_bytes",
            "Size of the store (SQLite: the database file's pages; PostgreSQL: the database)",
            [],
            mode="mostrecent",
        )
        # Accepted webhooks are tallied in plain lists and added to the metrics above in one
        # go (`flush`): at every scrape, and a second after the first unflushed webhook, so a
        # scrape of another process (multiprocess mode) lags by at most that. Per webhook a
        # counter's lock and the histogram's bucket walk in Python cost more than the rest
        # of the bookkeeping of a request.
        self._accepted = {s: _Tally() for s in sources}
        self._flush_at: asyncio.TimerHandle | None = None
        for source in self._accepted:  # each source's series exist (at 0) from the start
            for outcome in ("new", "duplicate"):
                self.webhooks.labels(source, outcome, "")
            self.request_seconds.labels(source)

    def webhook_accepted(self, source: str, duplicate: bool, started: float) -> None:
        tally = self._accepted.get(source)
        if tally is None:
            tally = self._accepted[source] = _Tally()
        seconds = time.perf_counter() - started
        tally.counts[duplicate] += 1
        tally.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        tally.seconds += seconds
        if self._flush_at is None:
            try:
                self._flush_at = running_loop().call_later(FLUSH_S, self.flush)
            except RuntimeError:  # no event loop (a direct call): at once
                self.flush()

    def flush(self) -> None:
        """Add the tallied webhooks to the exported metrics."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        for source, tally in self._accepted.items():
            if tally.counts[False] or tally.counts[True]:
                tally.flush(source, self.webhooks, self.request_seconds)

    def webhook_confirming(self, source: str) -> None:
        self.webhooks.labels(source, "confirming", "").inc()

    def webhook_refused(self, source: str | None, reason: str, started: float) -> None:
        # Unknown source names are not labels: anyone could mint unlimited series.
        label = source if source in self._accepted else ""
        self.webhooks.labels(label, "rejected", reason).inc()
        if label:
            self.request_seconds.labels(label).observe(time.perf_counter() - started)

    async def render(self, refresh: Callable[[Metrics], Awaitable[None]]) -> bytes:
        await refresh(self)
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            every_process = CollectorRegistry()
            MultiProcessCollector(every_process)  # type: ignore[no-untyped-call]
            return generate_latest(every_process)
        return generate_latest(self.registry)


FLUSH_S = 1.0  # tallied webhooks reach the exported metrics at most this late


class _Tally:
    """One source's accepted webhooks since the last flush: new and duplicate counts, the
    request seconds by LATENCY_BUCKETS bucket (the last: over every bound) and their sum."""

    __slots__ = ("buckets", "counts", "seconds")

    def __init__(self) -> None:
        self.counts = [0, 0]  # [new, duplicate]
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.seconds = 0.0

    def flush(self, source: str, webhooks: Counter, seconds: Histogram) -> None:
        for outcome, count in zip(("new", "duplicate"), self.counts, strict=True):
            if count:
                webhooks.labels(source, outcome, "").inc(count)
        # What Histogram.observe does per value, once per bucket: its child's bucket values
        # (the bucket a value falls in, `le` upper bounds, +Inf last) and its sum.
        child = seconds.labels(source)
        for bucket, count in zip(child._buckets, self.buckets, strict=True):
            if count:
                bucket.inc(count)
        child._sum.inc(self.seconds)
        self.counts = [0, 0]
        self.buckets = [0] * len(self.buckets)
        self.seconds = 0.0
