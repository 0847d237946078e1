"""Steady stream with fan-out: does delivery keep up? (issue 11)

    .venv/bin/python bench/steady/run.py [--workers 0 | --delivery-workers K]
                                         [--rates 100,500,750,1000] [--seconds 10]
                                         [--database postgresql://...]

For each rate: a fresh `hookyard serve` (or `serve --workers N`, or with --delivery-workers K
the roles apart: one `serve --no-worker` for HTTP and K `hookyard worker` processes that share
the delivery work through leased claims) with one rendergrid source and
three `http` sinks at their DEFAULT settings (concurrency 4, whsec_-signed), every event routed
to all three; the sink is bench/delivery/sink_app.py (answers 200 at once, records each
request's path, webhook-id and arrival time). bench/delivery/loadgen.py posts unique signed
webhooks at RATE/s for SECONDS (open loop, 64 connections). Then it waits for every delivery.

Reported per rate: webhooks answered 200 (and non-200), deliveries expected (3 per event) and
arrived, duplicates (a (sink, webhook-id) pair seen twice), the LAG (last arrival minus the end
of the stream: the target is <= 3 s), and the latency from a webhook's 200 to its delivery's
arrival (p50, p99), the rate the intake actually answered (the load generator is bounded by
its 64 connections: an intake that cannot answer RATE/s stretches the stream), and the delivery
throughput (deliveries / (last arrival - first 200)). The highest rate that was answered at
>= 95 % of RATE, whose lag is <= 3 s, with nothing missing or doubled, is the answer to "the
highest rate that still holds": at that rate the backlog stays flat. Writes
bench/steady/results-<workers>[-d<K>][-pg].json.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from bench.delivery import run as delivery  # noqa: E402
from bench.ingest import run as ingest  # noqa: E402

LAG_TARGET_S = 3.0
RATE_TOLERANCE = 0.95  # the intake must have answered at least this share of the offered rate
SINK = """
[sinks.{name}]
type = "http"
url = "{url}/{name}"
secret = "{secret}"

[[routes]]
sources = ["*"]
types = ["*"]
sinks = ["{name}"]
"""


def config(workdir: Path, sink_url: str, database: str | None) -> Path:
    text = ingest.CONFIG_HEAD.format(database=database or f"sqlite:///{workdir / 'hookyard.db'}",
                         secret=ingest.SECRET)
    for i, name in enumerate(delivery.SINKS):
        secret = "whsec_" + base64.b64encode(f"bench-{name}-{i}".ljust(32, "x").encode()).decode()
        text += SINK.format(name=name, url=sink_url, secret=secret)
    path = workdir / "hookyard.toml"
    path.write_text(text)
    return path


def empty(database: str) -> None:
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        names = [t for t in ("attempts", "deliveries", "events", "jobs", "leases") if t in tables]
        if names:
            conn.execute(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE")


@contextlib.contextmanager
def delivery_workers(count: int, cfg: Path, workdir: Path) -> Any:
    """`count` `hookyard worker` processes (no HTTP), stopped with SIGTERM at the end."""
    procs = []
    try:
        for i in range(count):
            with (workdir / f"worker-{i}.log").open("ab") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "receiver.cli", "worker", "--config", str(cfg)],
                    cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=delivery._env()))
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def one_rate(
    rate: float, seconds: float, workers: int, sink: str, database: str | None,
    delivery_workers_n: int = 0,
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"hookyard-steady-{int(rate)}-"))
    if database:
        empty(database)
    cfg = config(workdir, sink, database)
    port = ingest._free_port()
    argv = [sys.executable, "-m", "receiver.cli", "serve", "--config", str(cfg), "--host",
            "127.0.0.1", "--port", str(port), *(["--workers", str(workers)] if workers else []),
            *(["--no-worker"] if delivery_workers_n else [])]
    before = delivery._sink_count(sink)
    with delivery._process(argv, workdir / "hookyard.log", f"http://127.0.0.1:{port}/readyz",
                           "hookyard", workdir), \
            delivery_workers(delivery_workers_n, cfg, workdir):
        out = workdir / "load.json"
        subprocess.run([sys.executable, str(ROOT / "bench/delivery/loadgen.py"),
                        f"http://127.0.0.1:{port}/hooks/rendergrid", str(cfg), str(rate),
                        str(seconds), str(out), "--connections", "64"],
                       check=True, env=delivery._env())
        load = json.loads(out.read_text())
        ok = {r[2]: r[4] for r in load["results"] if r[1] == 200}
        stream_end = max(ok.values())
        expected = 3 * len(ok)
        deadline = time.time() + 120
        while delivery._sink_count(sink) - before < expected and time.time() < deadline:
            time.sleep(0.2)
        records = delivery._sink_records(sink, before)
    matched = delivery._match(records, ok)
    arrivals = [t for _, wid, t in records if wid in ok]
    lag = max(arrivals) - stream_end if arrivals else float("inf")
    lat = matched["latencies"]
    span = max(arrivals) - min(ok.values()) if arrivals else 0.0
    # The load generator is open-loop but bounded by its connections: when the intake cannot
    # answer RATE/s, the stream simply lasts longer. Such a rate was not offered, so it does
    # not hold, whatever the lag.
    answered_per_s = len(ok) / max(stream_end - min(ok.values()), 1e-9) if ok else 0.0
    return {
        "rate": rate, "seconds": seconds, "workers": workers,
        "delivery_workers": delivery_workers_n,
        "deliveries_per_s": round(len(arrivals) / span, 1) if span > 0 else None,
        "answered_200": len(ok), "answered_per_s": round(answered_per_s, 1),
        "non_200": len(load["results"]) - len(ok),
        "errors": len(load["errors"]), "planned": load["planned"],
        "deliveries_expected": expected, "deliveries_unique": matched["unique"],
        "duplicates": matched["duplicates"], "lag_s": round(lag, 3),
        "latency_ms": {"p50": round(delivery._pct(lat, 50) * 1000, 2),
                       "p99": round(delivery._pct(lat, 99) * 1000, 2)} if lat else None,
        "holds": (lag <= LAG_TARGET_S and matched["unique"] == expected
                  and answered_per_s >= RATE_TOLERANCE * rate
                  and matched["duplicates"] == 0 and len(ok) == load["planned"]),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--delivery-workers", type=int, default=0,
                   help="run serve --no-worker plus this many `hookyard worker` processes")
    p.add_argument("--rates", default="100,500,750,1000")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--database", help="a postgresql:// URL (emptied before each rate)")
    args = p.parse_args()
    if args.workers and args.delivery_workers:
        p.error("--workers brings its own worker; use --delivery-workers with one web process")
    workdir = Path(tempfile.mkdtemp(prefix="hookyard-steady-sink-"))
    sink_cm, sink = delivery._sink_server(workdir)
    rows = []
    with sink_cm:
        for rate in [float(r) for r in args.rates.split(",")]:
            row = one_rate(rate, args.seconds, args.workers, sink, args.database,
                           args.delivery_workers)
            rows.append(row)
            print(json.dumps(row), flush=True)
    held = [r["rate"] for r in rows if r["holds"]]
    print(f"highest rate that holds (lag <= {LAG_TARGET_S} s, none missing or twice): "
          f"{max(held) if held else 'none'} webhooks/s")
    tag = str(args.workers) + (f"-d{args.delivery_workers}" if args.delivery_workers else "")
    tag += "-pg" if args.database else ""
    (HERE / f"results-{tag}.json").write_text(json.dumps(
        {"seconds": args.seconds, "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
