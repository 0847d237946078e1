"""Prometheus metrics at GET /metrics (text format, no token: scrape from your network only).

One registry per app (not the process-global one), so several apps in one process (tests)
never collide. Gauges about the store (pending deliveries, age of the oldest) are read from the
store when scraped, not kept up to date on the hot path.

With several processes (`hookyard serve --workers N`, or web and worker processes started with
the same PROMETHEUS_MULTIPROC_DIR) every process writes its values to files in that directory
(prometheus_client's multiprocess mode) and a scrape of any process adds them all up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

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
        # The hot path uses pre-bound children: labels() costs a dict lookup and a lock.
        self._accepted = {s: self._bound(s) for s in sources}

    def _bound(self, source: str) -> tuple[Counter, Counter, Histogram]:
        """A source's children: webhooks new, webhooks duplicate, request seconds."""
        return (
            self.webhooks.labels(source, "new", ""),
            self.webhooks.labels(source, "duplicate", ""),
            self.request_seconds.labels(source),
        )

    def webhook_accepted(self, source: str, duplicate: bool, started: float) -> None:
        new, dup, seconds = self._accepted.get(source) or self._bound(source)
        (dup if duplicate else new).inc()
        seconds.observe(time.perf_counter() - started)

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
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            every_process = CollectorRegistry()
            MultiProcessCollector(every_process)  # type: ignore[no-untyped-call]
            return generate_latest(every_process)
        return generate_latest(self.registry)
