"""GET /metrics: counters move with what happened, gauges read the store."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

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
