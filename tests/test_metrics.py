"""GET /metrics: counters move with what happened, gauges read the store."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from receiver import metrics as metrics_module
from receiver.metrics import LATENCY_BUCKETS, Metrics
from tests.support import app_client, fixture, load, signed_headers

COMPLETED = fixture("rendergrid", "completed.json")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_count_outcomes_and_read_pending_deliveries(tmp_path: Path) -> None:
    config = load(tmp_path)
    async with app_client(config) as (client, service):
        await service.delivery.stop()  # keep the deliveries pending for the gauge
        headers = signed_headers(config, "rendergrid", COMPLETED)
        for _ in range(2):
            await client.post("/hooks/rendergrid", content=COMPLETED, headers=headers)
        await client.post("/hooks/rendergrid", content=COMPLETED,
                          headers={**headers, "X-Webhook-Signature-256": "sha256=00"})
        await client.post("/hooks/nosuch", content=b"{}",
                          headers={"Content-Type": "application/json"})
        r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)

    def webhooks(outcome: str, reason: str = "", source: str = "rendergrid") -> float:
        labels = (("outcome", outcome), ("reason", reason), ("source", source))
        return got.get(("hookyard_webhooks_total", labels), 0.0)

    assert webhooks("new") == 1 and webhooks("duplicate") == 1
    assert webhooks("rejected", "signature_invalid") == 1
    assert webhooks("rejected", "not_found", source="") == 1  # unknown names are no labels
    assert got[("hookyard_deliveries_pending", ())] == 2  # two routes selected two sinks
    assert got[("hookyard_oldest_pending_delivery_age_seconds", ())] >= 0
    count = got[("hookyard_webhook_request_seconds_count", (("source", "rendergrid"),))]
    assert count == 3


async def _nothing(_: Metrics) -> None:
    return None


async def test_tallied_webhooks_export_what_observing_each_one_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # webhook_accepted tallies; a flush adds the tally to the exported metrics in one go.
    # The export must be what Histogram.observe and Counter.inc per webhook would give.
    rng = random.Random(7)
    seconds = [0.0, *LATENCY_BUCKETS, *(rng.uniform(0, 3.0) for _ in range(300)), 9.0]
    clock = iter(seconds)
    metrics = Metrics(["rendergrid"])
    registry = CollectorRegistry()
    reference = Histogram("hookyard_webhook_request_seconds", "x", ["source"],
                          buckets=LATENCY_BUCKETS, registry=registry)
    monkeypatch.setattr(metrics_module.time, "perf_counter", lambda: next(clock))
    for i, value in enumerate(seconds):
        metrics.webhook_accepted("rendergrid", i % 3 == 0, 0.0)
        reference.labels("rendergrid").observe(value)
        if i == 150:  # a flush half-way: tallies start again from zero after it
            metrics.flush()
    monkeypatch.undo()
    got = samples((await metrics.render(_nothing)).decode())
    want = samples(generate_latest(registry).decode())
    for key, value in want.items():
        if key[0].endswith("_created"):
            continue
        assert got[key] == value if not key[0].endswith("_sum") else abs(got[key] - value) < 1e-9
    by_outcome = {labels: v for (name, labels), v in got.items()
                  if name == "hookyard_webhooks_total"}
    duplicates = len(range(0, len(seconds), 3))
    assert by_outcome[(("outcome", "duplicate"), ("reason", ""), ("source", "rendergrid"))] \
        == duplicates
    assert by_outcome[(("outcome", "new"), ("reason", ""), ("source", "rendergrid"))] \
        == len(seconds) - duplicates


async def test_tallied_webhooks_are_exported_within_a_second_without_a_scrape() -> None:
    # In multiprocess mode another process's scrape reads this process's files: the tally
    # must reach them by itself, not only when this process is scraped.
    metrics = Metrics(["rendergrid"])
    child = metrics.webhooks.labels("rendergrid", "new", "")
    metrics.webhook_accepted("rendergrid", False, 0.0)
    assert child._value.get() == 0  # tallied, not yet exported
    loop = asyncio.get_running_loop()
    deadline = loop.time() + metrics_module.FLUSH_S + 2
    while child._value.get() == 0 and loop.time() < deadline:
        await asyncio.sleep(0.02)
    assert child._value.get() == 1


async def test_each_sources_series_are_exported_at_zero_before_its_first_webhook() -> None:
    got = samples((await Metrics(["rendergrid"]).render(_nothing)).decode())
    labels = (("outcome", "new"), ("reason", ""), ("source", "rendergrid"))
    assert got[("hookyard_webhooks_total", labels)] == 0
    assert got[("hookyard_webhook_request_seconds_count", (("source", "rendergrid"),))] == 0
