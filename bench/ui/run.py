"""Web UI benchmark: how long /ui pages take to render with a million events stored.

    .venv/bin/python bench/ui/run.py [--events 1000000] [--renders 20] [--keep DIR]

Fills a temp SQLite file through bulk SQL in the store's own schema (migrated by SqliteStore):
--events events spread over the last 7 days (95% rendergrid, 5% renderful; 97% completed, 3%
failed), two deliveries each (an HTTP sink and a jsonl sink: 98.5% delivered, 1% dead, 0.5%
pending but not due until tomorrow, so the runners stay idle), one attempt per finished delivery
at its event's time, and 1,000 finished watched jobs. Then it signs in to the real ASGI app
(`receiver.app.create_app`, lifespan running, in-process through httpx's ASGI transport, so the
numbers are the server's own: routing, store reads, template rendering) and renders each page
--renders times after two warm-up renders, printing median and p95 per page.
Writes bench/ui/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from receiver import settings as settings_mod  # noqa: E402
from receiver.app import Hookyard, create_app  # noqa: E402
from receiver.store import EventFilter  # noqa: E402
from receiver.store.sqlite import SqliteStore  # noqa: E402

TOKEN = "bench-admin-token-0123456789"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CONFIG = """
[server]
database = "sqlite:///{db}"
admin_token = "{token}"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["bench-secret"]

[sources.renderful]
provider = "renderful"
secrets = ["bench-secret"]
signature = {{ header = "X-Renderful-Signature" }}

[sinks.backend]
type = "http"
url = "http://127.0.0.1:9/hook"

[sinks.log]
type = "jsonl"
path = "{tmp}/events.jsonl"

[[routes]]
sources = ["*"]
types = ["*"]
sinks = ["backend", "log"]
"""
DAYS = 7


def event_id(ms: int, rng: random.Random) -> str:
    value = (ms << 80) | rng.getrandbits(80)
    return "evt_" + "".join(CROCKFORD[(value >> s) & 31] for s in range(125, -5, -5))


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}000Z"


def fill(db_path: Path, events: int, seed: int = 7) -> dict[str, Any]:
    """Bulk-insert the data set; returns ids and job ids the renders look up."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - DAYS * 86400 * 1000
    step = (now_ms - start_ms) / events
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA synchronous = OFF")
    ids: list[str] = []
    jobs: list[str] = []
    delivery_id = 0
    batch_e: list[tuple[Any, ...]] = []
    batch_d: list[tuple[Any, ...]] = []
    batch_a: list[tuple[Any, ...]] = []

    def flush() -> None:
        conn.executemany(
            "INSERT INTO events (id, idempotency_key, type, source, provider, job_id, status,"
            " via, received_at, event_json, raw_body, headers_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'webhook', ?, ?, ?, '{}')", batch_e)
        conn.executemany(
            "INSERT INTO deliveries (id, event_id, sink, status, attempts, next_attempt_at,"
            " last_status_code, last_error, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch_d)
        conn.executemany(
            "INSERT INTO attempts (delivery_id, started_at, duration_ms, status_code, error,"
            " outcome) VALUES (?, ?, ?, ?, ?, ?)", batch_a)
        conn.commit()
        batch_e.clear()
        batch_d.clear()
        batch_a.clear()

    for n in range(events):
        ms = int(start_ms + n * step)
        eid = event_id(ms, rng)
        source = "renderful" if rng.random() < 0.05 else "rendergrid"
        status = "failed" if rng.random() < 0.03 else "completed"
        job = f"job-{n:07d}-{rng.getrandbits(32):08x}"
        outputs = [f"https://cdn.example/{job}/0.png"] if status == "completed" else []
        doc = {"id": eid, "type": f"generation.{status}", "source": source, "provider": source,
               "job_id": job, "status": status, "outputs": outputs, "error": None,
               "cost": 0.1, "model": None, "received_at": iso(ms), "via": "webhook",
               "idempotency_key": f"{source}:{job}:{status}", "metadata": {}}
        raw = json.dumps({"event": f"creation.{status}", "id": job, "status": status,
                          "result_urls": outputs, "cost": 0.1, "pad": "x" * 160}).encode()
        batch_e.append((eid, doc["idempotency_key"], doc["type"], source, source, job, status,
                        doc["received_at"], json.dumps(doc, separators=(",", ":")), raw))
        at = ms / 1000
        for sink in ("backend", "log"):
            delivery_id += 1
            roll = rng.random()
            state = "pending" if roll < 0.005 else "dead" if roll < 0.015 else "delivered"
            code = None if sink == "log" else 503 if state == "dead" else 200
            error = "HTTP 503 from the sink" if state == "dead" else None
            due = now_ms / 1000 + 86400 if state == "pending" else at
            batch_d.append((delivery_id, eid, sink, state, 0 if state == "pending" else 1, due,
                            code, error, at, at + 0.05))
            if state != "pending":
                batch_a.append((delivery_id, at, 50.0, code, error, state))
        if n % 1000 == 0:
            ids.append(eid)
            jobs.append(job)
        if len(batch_e) >= 20_000:
            flush()
    flush()
    conn.executemany(
        "INSERT INTO jobs (source, job_id, state, metadata_json, created_at, deadline_at,"
        " next_poll_at, polls, last_status, updated_at) VALUES (?, ?, ?, '{}', ?, ?, ?, ?, ?, ?)",
        [("rendergrid", f"job-w{n:05d}", "done" if n % 10 else "expired", now_ms / 1000,
          now_ms / 1000 + 3600, now_ms / 1000 + 3600, n % 17, "running", now_ms / 1000)
         for n in range(1000)])
    conn.commit()
    conn.close()
    return {"ids": ids, "jobs": jobs, "middle": iso(int(start_ms + (now_ms - start_ms) / 2))}


async def render_all(config: settings_mod.Settings, data: dict[str, Any],
                     renders: int) -> list[dict[str, Any]]:
    app = create_app(config)
    service: Hookyard = app.state.hookyard  # type: ignore[attr-defined]
    probe_id = data["ids"][len(data["ids"]) // 2]
    probe_job = data["jobs"][len(data["jobs"]) // 2]
    pages = [
        ("events, newest first", "/ui/events"),
        ("events, live rows poll", "/ui/events/rows"),
        ("events, page 2 (cursor)", None),
        ("events by job id (no source)", f"/ui/events?job_id={probe_job}"),
        ("events by job id and source", f"/ui/events?job_id={probe_job}&source=rendergrid"),
        ("events by type (3% failed)", "/ui/events?type=generation.failed"),
        ("events by source (5% renderful)", "/ui/events?source=renderful"),
        ("events by source (95% rendergrid)", "/ui/events?source=rendergrid"),
        ("events since 10 s ago (< 1 page)", "/ui/events?since={recent}"),
        ("events until the middle", f"/ui/events?until={data['middle']}"),
        ("one event", f"/ui/events/{probe_id}"),
        ("sinks", "/ui/sinks"),
        ("dead letters of a sink", "/ui/sinks/backend"),
        ("replay dead: the count", "/ui/sinks/backend/replay-dead"),
        ("watched jobs", "/ui/jobs"),
    ]
    results = []
    async with service.lifespan(None):  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            r = await client.post("/ui/login", data={"token": TOKEN})
            assert r.status_code == 303, r.text
            first = (await client.get("/ui/events")).text
            older = first.split('href="/ui/events?before=')[1].split('"')[0]
            recent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 10))
            for name, path in pages:
                path = (path or f"/ui/events?before={older}").format(recent=recent)
                times = []
                for n in range(renders + 2):
                    started = time.perf_counter()
                    r = await client.get(path)
                    took = time.perf_counter() - started
                    assert r.status_code == 200, (path, r.status_code, r.text[-400:])
                    if n >= 2:
                        times.append(took * 1000)
                times.sort()
                results.append({
                    "page": name, "path": path, "renders": renders,
                    "median_ms": round(statistics.median(times), 2),
                    "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 2),
                    "bytes": len(r.content),
                })
                print(f"{name:34} {results[-1]['median_ms']:9.2f} ms  p95 "
                      f"{results[-1]['p95_ms']:9.2f} ms  {len(r.content):7,d} B", flush=True)
        results += await store_plans(service)
    return results


async def store_plans(service: Hookyard) -> list[dict[str, Any]]:
    """The same filters through store.list_events as the admin API calls it, for comparison."""
    recent = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 10))
    plans = [("source=renderful", EventFilter(source="renderful")),
             ("source=rendergrid", EventFilter(source="rendergrid")),
             ("since=10 s ago", EventFilter(since=recent))]
    results = []
    for name, where in plans:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            await service.store.list_events(where, None, 51)
            times.append((time.perf_counter() - started) * 1000)
        results.append({"page": f"store.list_events {name} (the admin API's read)",
                        "path": None, "renders": 3, "median_ms": round(statistics.median(times), 2),
                        "p95_ms": round(max(times), 2), "bytes": 0})
        print(f"{results[-1]['page']:60} {results[-1]['median_ms']:9.2f} ms", flush=True)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--renders", type=int, default=20)
    p.add_argument("--keep", help="build the database in this directory and keep it")
    args = p.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="hookyard-ui-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    db = tmp / "hookyard.db"
    config_path = tmp / "hookyard.toml"
    config_path.write_text(CONFIG.format(db=db, tmp=tmp, token=TOKEN))
    config = settings_mod.load(str(config_path))
    started = time.monotonic()
    fresh = not db.exists()
    if fresh:
        store = SqliteStore(str(db))
        asyncio.run(store.open())
        asyncio.run(store.close())
        data = fill(db, args.events)
        (tmp / "data.json").write_text(json.dumps(data))
    else:
        data = json.loads((tmp / "data.json").read_text())
    fill_s = time.monotonic() - started
    print(f"data set: {args.events:,} events in {fill_s:.0f} s; "
          f"{db.stat().st_size / 2**20:,.0f} MiB", flush=True)
    results = asyncio.run(render_all(config, data, args.renders))
    out = {
        "events": args.events, "renders": args.renders,
        "fill_s": round(fill_s, 1) if fresh else None,
        "db_mib": round(db.stat().st_size / 2**20), "pages": results,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "sqlite": sqlite3.sqlite_version, "platform": platform.platform()},
    }
    (Path(__file__).parent / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    if not args.keep:
        for name in ("hookyard.db", "hookyard.db-wal", "hookyard.db-shm", "hookyard.db-lock",
                     "data.json", "hookyard.toml", "events.jsonl"):
            (tmp / name).unlink(missing_ok=True)
        tmp.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
