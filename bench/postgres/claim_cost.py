"""Does the PostgreSQL queue slow down as history grows? EXPLAIN ANALYZE of the claim query.

    .venv/bin/python bench/postgres/claim_cost.py [--delivered 1000000] [--pending 10000]

Creates a throwaway database on 127.0.0.1:5432 (user postgres; or --url), migrates it with
PostgresStore, fills it with SQL (generate_series: one event per delivery; --delivered rows
'delivered', --pending rows 'pending' and due), ANALYZEs, then runs the store's own claim
statement (a batch of 16, FOR UPDATE SKIP LOCKED, leased) inside a transaction that is rolled
back, five times, printing EXPLAIN (ANALYZE, BUFFERS) of the last and the times of all.
Writes bench/postgres/claim_cost.json and drops the database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from receiver.store.postgres import PostgresStore  # noqa: E402

CLAIM = (
    "WITH picked AS ("
    " SELECT id FROM deliveries WHERE sink = %s AND status = 'pending'"
    " AND next_attempt_at <= %s AND (lease_until IS NULL OR lease_until < %s)"
    " ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED),"
    " claimed AS ("
    " UPDATE deliveries d SET claimed_by = %s, lease_until = %s FROM picked"
    " WHERE d.id = picked.id RETURNING d.id, d.attempts, d.event_id, d.next_attempt_at)"
    " SELECT c.id, c.attempts, e.event_json, e.raw_body FROM claimed c"
    " JOIN events e ON e.id = c.event_id ORDER BY c.next_attempt_at, c.id"
)


def fill(url: str, delivered: int, pending: int) -> None:
    total = delivered + pending
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events (id, idempotency_key, type, source, provider, job_id, status,"
            " via, received_at, event_json, raw_body, headers_json)"
            " SELECT 'evt_' || lpad(g::text, 12, '0'), 'k' || g, 'generation.completed',"
            " 'rendergrid', 'rendergrid', 'job-' || g, 'completed', 'webhook',"
            " '2026-11-22T10:00:00.000000Z', '{\"id\": \"evt\"}', '{}'::bytea, '{}'"
            " FROM generate_series(1, %s) g", (total,))
        now = time.time()
        conn.execute(
            "INSERT INTO deliveries (event_id, sink, status, attempts, next_attempt_at,"
            " created_at, updated_at)"
            " SELECT 'evt_' || lpad(g::text, 12, '0'), 'backend',"
            " CASE WHEN g <= %s THEN 'delivered' ELSE 'pending' END, 1, %s - 3600 + g / 1000.0,"
            " %s - 3600, %s - 3600 FROM generate_series(1, %s) g",
            (delivered, now, now, now, total))
        conn.execute("ANALYZE")


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--delivered", type=int, default=1_000_000)
    p.add_argument("--pending", type=int, default=10_000)
    args = p.parse_args()
    name = f"hookyard_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = args.url.rsplit("/", 1)[0] + f"/{name}"
    try:
        store = PostgresStore(url)
        await store.open()
        await store.close()
        started = time.perf_counter()
        fill(url, args.delivered, args.pending)
        fill_s = time.perf_counter() - started
        times, plan = [], ""
        with psycopg.connect(url) as conn:
            for _ in range(5):
                now = time.time()
                params = ("backend", now, now, 16, "bench", now + 300)
                t0 = time.perf_counter()
                conn.execute(CLAIM, params).fetchall()
                times.append(round((time.perf_counter() - t0) * 1000, 3))
                conn.rollback()
            rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + CLAIM, params).fetchall()
            plan = "\n".join(r[0] for r in rows)
            conn.rollback()
        result = {"delivered": args.delivered, "pending": args.pending, "fill_s": round(fill_s, 1),
                  "claim_ms": times, "plan": plan}
        print(plan)
        print(json.dumps({k: v for k, v in result.items() if k != "plan"}))
        (Path(__file__).parent / "claim_cost.json").write_text(json.dumps(result, indent=1))
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
