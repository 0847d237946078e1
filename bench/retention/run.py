"""Retention benchmark: ingest latency with and without a prune pass over 1M old events.

    .venv/bin/python bench/retention/run.py [--events 1000000] [--rate 200] [--seconds 30]
                                            [--database postgresql://…] [--keep]

1. Seeds a store with N events received 120 days ago, each with one delivered delivery and one
   attempt (raw body and event JSON shaped like a Rendergrid webhook's), written directly in
   big transactions (SQLite: a file created by hookyard itself, so with incremental
   auto-vacuum; PostgreSQL: COPY into a schema hookyard migrated).
2. Baseline: `hookyard serve` on that store with `[retention] max_age = "0"` (no pruning);
   bench/delivery/loadgen.py sends RATE unique signed webhooks per second for SECONDS (open
   loop), latency per request = answer read - request written.
3. Pruning: the same with `max_age = "90d"`: the worker's pruner starts its pass over the N old
   events at start-up, while the same load runs. The events left at the end of the window show
   that the pass was still running throughout it (else the window is cut at the log line
   `retention.pruned`). Then the server runs on until the pass ends: its duration, the rows
   removed and the database size before/after are recorded.

Prints a table and writes bench/retention/results.json (or results-postgres.json).
Method and numbers: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from bench.ingest import run as ingest  # noqa: E402
from receiver.core.events import new_event_id  # noqa: E402
from receiver.store import age_bound, open_store  # noqa: E402

SOURCE = ingest.SOURCE
CONFIG = ingest.CONFIG_HEAD + """
[sinks.log]
type = "jsonl"
path = "{workdir}/events.jsonl"

[retention]
max_age = "{max_age}"
"""
AGE_DAYS = 120
SEED_CHUNK = 50_000


def main() -> int:
    args = _parser().parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hookyard-retention-"))
    database = args.database or f"sqlite:///{workdir}/hookyard.db"
    postgres = not database.startswith("sqlite:")
    try:
        seeded_s = _seed(database, args.events)
        size0 = _size(database)
        print(f"seeded {args.events} old events in {seeded_s:.1f} s; store {size0 / 2**20:.0f} MiB",
              flush=True)
        rounds = []
        for n in range(args.rounds):  # alternating A B A B: the machine's noise hits both
            rounds.append({
                "baseline": _round(workdir, database, "0", args, tag=f"baseline{n}"),
                "pruning": _round(workdir, database, "90d", args, tag=f"pruning{n}"),
            })
        finish = (_round(workdir, database, "90d", args, tag="finish", until_pass_ends=True,
                         load=False) if args.finish else {})
        baseline = _merge([r["baseline"] for r in rounds])
        pruning = _merge([r["pruning"] for r in rounds])
        result = {
            "backend": "postgresql" if postgres else "sqlite",
            "events_seeded": args.events,
            "seed_s": round(seeded_s, 1),
            "rate_per_s": args.rate,
            "seconds": args.seconds,
            "size_before_bytes": size0,
            "size_after_bytes": _size(database),
            "rounds": args.rounds,
            "baseline": baseline,
            "pruning": pruning,
            "per_round": rounds,
            "finish": finish,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "sqlite": sqlite3.sqlite_version, "platform": platform.platform()},
            "commit": _commit(),
        }
        out = HERE / ("results-postgres.json" if postgres else "results.json")
        out.write_text(json.dumps(result, indent=2) + "\n")
        _print(result)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            for path in sorted(workdir.glob("**/*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            workdir.rmdir()
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000, help="old events to seed")
    p.add_argument("--rate", type=float, default=200.0, help="webhooks per second")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each load window")
    p.add_argument("--rounds", type=int, default=3, help="baseline/pruning window pairs")
    p.add_argument("--database", help="a postgresql:// URL to an EMPTY database (default: "
                   "a temp SQLite file)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (store, logs)")
    p.add_argument("--no-finish", dest="finish", action="store_false",
                   help="do not wait for the rest of the pass after the load windows")
    return p


# -- seeding ----------------------------------------------------------------------------------


def _rows(count: int, start: int, base_ms: int) -> Iterator[tuple[tuple[Any, ...], ...]]:
    """(event, delivery, attempt) rows for events start..start+count, 1 ms apart."""
    for n in range(start, start + count):
        ms = base_ms + n
        event_id = new_event_id(now_ms=ms)
        job = f"seed-{n:08d}"
        received = age_bound(ms / 1000)[1]
        raw = ingest._body(job)
        doc = json.dumps({
            "id": event_id, "type": "generation.completed", "source": SOURCE,
            "provider": "rendergrid", "job_id": job, "status": "completed",
            "outputs": [f"https://cdn.rendergrid.io/images/bench/{job}_0.jpg"], "error": None,
            "cost": 0.1, "model": None, "received_at": received, "via": "webhook",
            "idempotency_key": f"{SOURCE}:{job}:completed", "metadata": {},
        }, separators=(",", ":"))
        at = ms / 1000
        yield (
            (event_id, f"{SOURCE}:{job}:completed", "generation.completed", SOURCE,
             "rendergrid", job, "completed", "webhook", received, doc, raw,
             '{"content-type":"application/json"}'),
            (n + 1, event_id, "log", "delivered", 1, at, 200, None, at, at),
            (n + 1, n + 1, at, 3.2, 200, None, "delivered"),
        )


def _seed(database: str, count: int) -> float:
    started = time.monotonic()
    store = open_store(database)
    asyncio.run(_migrate(store))
    base_ms = int((time.time() - AGE_DAYS * 86400) * 1000)
    if database.startswith("sqlite:"):
        _seed_sqlite(database.removeprefix("sqlite:///"), count, base_ms)
    else:
        _seed_postgres(database, count, base_ms)
    return time.monotonic() - started


async def _migrate(store: Any) -> None:
    await store.open()
    await store.close()


def _seed_sqlite(path: str, count: int, base_ms: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    for start in range(0, count, SEED_CHUNK):
        rows = list(_rows(min(SEED_CHUNK, count - start), start, base_ms))
        db.execute("BEGIN")
        db.executemany("INSERT INTO events (id, idempotency_key, type, source, provider, job_id,"
                       " status, via, received_at, event_json, raw_body, headers_json) VALUES"
                       " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [r[0] for r in rows])
        db.executemany("INSERT INTO deliveries (id, event_id, sink, status, attempts,"
                       " next_attempt_at, last_status_code, last_error, created_at, updated_at)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [r[1] for r in rows])
        db.executemany("INSERT INTO attempts (id, delivery_id, started_at, duration_ms,"
                       " status_code, error, outcome) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [r[2] for r in rows])
        db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _seed_postgres(url: str, count: int, base_ms: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(0, count, SEED_CHUNK):
            rows = list(_rows(min(SEED_CHUNK, count - start), start, base_ms))
            with conn.transaction():
                for table, columns, index in (
                    ("events", "id, idempotency_key, type, source, provider, job_id, status,"
                     " via, received_at, event_json, raw_body, headers_json", 0),
                    ("deliveries", "id, event_id, sink, status, attempts, next_attempt_at,"
                     " last_status_code, last_error, created_at, updated_at", 1),
                    ("attempts", "id, delivery_id, started_at, duration_ms, status_code, error,"
                     " outcome", 2),
                ):
                    with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row[index])
        conn.execute("SELECT setval('deliveries_id_seq', %s)", (count,))
        conn.execute("SELECT setval('attempts_id_seq', %s)", (count,))
        conn.execute("VACUUM ANALYZE")


def _size(database: str) -> int:
    async def size() -> int:
        store = open_store(database)
        await store.open()
        try:
            return await store.database_size()
        finally:
            await store.close()

    return asyncio.run(size())


def _count(database: str) -> int:
    async def count() -> int:
        store = open_store(database)
        await store.open()
        try:
            return await store.count_events()
        finally:
            await store.close()

    return asyncio.run(count())


# -- one round: a server, a load window ---------------------------------------------------------


def _round(workdir: Path, database: str, max_age: str, args: argparse.Namespace, *, tag: str,
           until_pass_ends: bool = False, load: bool = True) -> dict[str, Any]:
    """One server start: a load window (the latencies), and with `until_pass_ends` the rest
    of the prune pass (its duration and what it removed)."""
    config = workdir / f"{tag}.toml"
    config.write_text(CONFIG.format(database=database, secret=ingest.SECRET, workdir=workdir,
                                    max_age=max_age))
    log = workdir / f"{tag}.log"
    port = ingest._free_port()
    url = f"http://127.0.0.1:{port}"
    left_before = _events_left(database)
    result: dict[str, Any] = {"old_events_at_start": left_before}
    with _server(config, port, log, workdir) as started:
        if load:
            out = workdir / f"{tag}-load.json"
            subprocess.run(
                [sys.executable, str(ROOT / "bench/delivery/loadgen.py"),
                 f"{url}/hooks/{SOURCE}", str(config), str(args.rate), str(args.seconds),
                 str(out)],
                check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            result.update(_latencies(json.loads(out.read_text())))
            result["old_events_at_end"] = _events_left(database)
        if until_pass_ends:
            while _events_left(database):
                time.sleep(0.5)
            result["rest_of_pass_s"] = round(time.monotonic() - started, 1)
            result["old_events_at_end"] = 0
    return result


def _merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Latency percentiles over every round's requests together."""
    took = sorted(t for r in rounds for t in r.pop("_took_ms"))
    return {
        "requests": sum(r["requests"] for r in rounds),
        "non_200": sum(r["non_200"] for r in rounds),
        "p50_ms": round(_pct(took, 50), 2),
        "p90_ms": round(_pct(took, 90), 2),
        "p99_ms": round(_pct(took, 99), 2),
        "max_ms": round(took[-1], 2) if took else None,
        "per_round_p99_ms": [r["p99_ms"] for r in rounds],
        "old_events_removed": sum(r["old_events_at_start"] - r["old_events_at_end"]
                                  for r in rounds),
    }


@contextlib.contextmanager
def _server(config: Path, port: int, log: Path, workdir: Path) -> Iterator[float]:
    argv = [sys.executable, "-m", "receiver.cli", "serve", "--config", str(config),
            "--host", "127.0.0.1", "--port", str(port)]
    with log.open("ab") as f:
        proc = subprocess.Popen(argv, cwd=workdir, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        ingest._wait(proc, f"http://127.0.0.1:{port}/readyz", log, "hookyard")
        yield time.monotonic()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _events_left(database: str) -> int:
    """Old events still in the store (the seeded ones carry job ids seed-…)."""
    if database.startswith("sqlite:"):
        with sqlite3.connect(database.removeprefix("sqlite:///")) as db:
            return int(db.execute("SELECT COUNT(*) FROM events WHERE job_id LIKE 'seed-%'")
                       .fetchone()[0])
    import psycopg

    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT COUNT(*) FROM events WHERE job_id LIKE 'seed-%'").fetchone()
        return int(row[0]) if row else 0


def _latencies(load: dict[str, Any]) -> dict[str, Any]:
    results = load["results"]
    took = sorted((r[4] - r[3]) * 1000 for r in results if r[1] == 200)
    errors = [r for r in results if r[1] != 200]
    return {
        "_took_ms": took,
        "requests": len(results),
        "ok": len(took),
        "non_200": len(errors),
        "client_errors": load["errors"],
        "p50_ms": round(_pct(took, 50), 2),
        "p90_ms": round(_pct(took, 90), 2),
        "p99_ms": round(_pct(took, 99), 2),
        "max_ms": round(took[-1], 2) if took else None,
        "mean_ms": round(statistics.fmean(took), 2) if took else None,
    }


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def _commit() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    return "unknown"


def _print(result: dict[str, Any]) -> None:
    out = io.StringIO()
    print(f"\n{result['backend']}: {result['events_seeded']} old events, "
          f"{result['rate_per_s']:g} webhooks/s, {result['rounds']} x {result['seconds']:g} s "
          "windows each", file=out)
    print(f"{'':<10} {'requests':>8} {'non-200':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8}  per-round p99", file=out)
    for name in ("baseline", "pruning"):
        r = result[name]
        print(f"{name:<10} {r['requests']:>8} {r['non_200']:>8} {r['p50_ms']:>8} "
              f"{r['p90_ms']:>8} {r['p99_ms']:>8} {r['max_ms']:>8}  {r['per_round_p99_ms']}",
              file=out)
    pruned = result["pruning"]["old_events_removed"]
    window = result["rounds"] * result["seconds"]
    print(f"pruned during the load windows: {pruned} events ({pruned / window:.0f}/s); the rest "
          f"of the pass took {result['finish'].get('rest_of_pass_s')} s; store "
          f"{result['size_before_bytes'] / 2**20:.0f} -> {result['size_after_bytes'] / 2**20:.0f}"
          " MiB", file=out)
    print(out.getvalue())


if __name__ == "__main__":
    raise SystemExit(main())
