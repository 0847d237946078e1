"""Fan-out benchmark: webhooks in, three HTTP deliveries per event out, to a local sink.

    .venv/bin/python bench/delivery/run.py [--rates 100,500] [--duration 20] [--rounds 2]
        [--stream-duration 15] [--connections 64] [--concurrency 16] [--also-concurrency 4]

Starts a sink server (bench/delivery/sink_app.py under uvicorn: answers 200 at once to
POST /a, /b, /c and keeps path, `webhook-id` and arrival time of each request), and
`hookyard serve` with one rendergrid source, three `http` sinks a, b, c (→ the sink's /a, /b,
/c, each with a whsec_ secret, so outbound signing is included) and three [[routes]], each
routing every source and type to one sink: every event gets 3 delivery rows.

Phase 1, latency at a fixed rate: bench/delivery/loadgen.py (a separate process) posts unique
signed Rendergrid webhooks at RATE/s for --duration s and records when each 200 came back;
latency of a delivery = its arrival time at the sink - the 200's time of its event.

Phase 2, throughput: wrk replays a pre-signed batch (bench/ingest's requests.lua, 64
connections) for --stream-duration s; the pending delivery rows are counted every second until
all of them are delivered. Alternates with a second hookyard that has the same sources and
sinks but no routes (the ingest benchmark's setup: events stored, delivered nowhere), so the
ingest rate with and without fan-out is measured in the same run.

Prints tables and writes bench/delivery/results.json. Method and numbers: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from bench.ingest import run as ingest  # noqa: E402

SOURCE = ingest.SOURCE
SINKS = ("a", "b", "c")
TARGET_P50_MS = 50.0
INGEST_RESULTS = ROOT / "bench" / "ingest" / "results.json"

CONFIG = """\
[server]
host = "127.0.0.1"
database = "sqlite:///{db}"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["{secret}"]
tolerance_s = 300
"""
SINK = """
[sinks.{name}]
type = "http"
url = "{url}/{name}"
secret = "{secret}"
concurrency = {concurrency}
timeout_s = 10
"""
ROUTE = """
[[routes]]
sources = ["*"]
types = ["*"]
sinks = ["{name}"]
"""


def _config(workdir: Path, tag: str, sink_url: str, concurrency: int, routed: bool) -> Path:
    db = workdir / f"{tag}.db"
    text = CONFIG.format(db=db, secret=ingest.SECRET)
    for i, name in enumerate(SINKS):
        secret = "whsec_" + base64.b64encode(f"bench-sink-{name}-secret-{i}".ljust(32, "x")
                                             .encode()).decode()
        text += SINK.format(name=name, url=sink_url, secret=secret, concurrency=concurrency)
    if routed:
        text += "".join(ROUTE.format(name=name) for name in SINKS)
    path = workdir / f"{tag}.toml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- processes


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("WEB_CONCURRENCY", None)
    return env


@contextlib.contextmanager
def _process(argv: list[str], log: Path, ready_url: str, what: str,
             cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as f:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=_env())
    try:
        ingest._wait(proc, ready_url, log, what)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if proc.poll() is None:
            proc.kill()


def _sink_server(workdir: Path) -> tuple[Any, str]:
    port = ingest._free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.delivery.sink_app:app", "--host",
            "127.0.0.1", "--port", str(port), *ingest.UVICORN_FLAGS]
    cm = _process(argv, workdir / "sink.log", f"http://127.0.0.1:{port}/count", "sink", ROOT)
    return cm, f"http://127.0.0.1:{port}"


def _hookyard(config: Path, workdir: Path, tag: str,
              whatif: bool = False) -> tuple[Any, str, int]:
    port = ingest._free_port()
    module = "bench.delivery.whatif_no_sniff" if whatif else "receiver.cli"
    argv = [sys.executable, "-m", module, "serve", "--config", str(config),
            "--host", "127.0.0.1", "--port", str(port)]
    cm = _process(argv, workdir / f"{tag}.log", f"http://127.0.0.1:{port}/readyz",
                  f"hookyard ({tag})", workdir)
    return cm, f"http://127.0.0.1:{port}/hooks/{SOURCE}", port


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 (127.0.0.1 only)
        return bytes(r.read())


def _sink_count(sink: str) -> int:
    return int(_get(f"{sink}/count"))


def _sink_records(sink: str, since: int) -> list[list[Any]]:
    return list(json.loads(_get(f"{sink}/stats?since={since}")))


# ---------------------------------------------------------------- database


def _db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def _pending(db: Path) -> int:
    with contextlib.closing(_db(db)) as c:
        return int(c.execute(
            "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'").fetchone()[0])


def _scalar(db: Path, sql: str, params: tuple[Any, ...] = ()) -> Any:
    with contextlib.closing(_db(db)) as c:
        return c.execute(sql, params).fetchone()[0]


def _delivery_stats(db: Path, after_id: int) -> dict[str, Any]:
    with contextlib.closing(_db(db)) as c:
        status = dict(c.execute("SELECT status, COUNT(*) FROM deliveries WHERE id > ?"
                                " GROUP BY status", (after_id,)).fetchall())
        retried = c.execute("SELECT COUNT(*) FROM deliveries WHERE id > ? AND attempts > 1",
                            (after_id,)).fetchone()[0]
    return {"by_status": status, "attempts_gt_1": retried}


class Sampler:
    """Counts pending delivery rows every `interval` s in a thread: [(time.time(), n), ...]."""

    def __init__(self, db: Path, interval: float = 1.0) -> None:
        self.db, self.interval = db, interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(sqlite3.Error):
                self.samples.append((time.time(), _pending(self.db)))
            self._stop.wait(self.interval)


def _wait_delivered(db: Path, sink: str, since: int, expected: int,
                    timeout: float) -> tuple[bool, float]:
    """Until the sink saw `expected` requests since index `since` and no row is pending."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if _sink_count(sink) - since >= expected and _pending(db) == 0:
            return True, time.monotonic() - t0
        time.sleep(0.25)
    return False, time.monotonic() - t0


# ---------------------------------------------------------------- statistics


def _pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def _dist_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"n": len(ms), "min": round(min(ms), 2) if ms else float("nan"),
            "p50": round(_pct(ms, 50), 2), "p90": round(_pct(ms, 90), 2),
            "p99": round(_pct(ms, 99), 2), "max": round(max(ms), 2) if ms else float("nan")}


def _match(records: list[list[Any]], t_of: dict[str, float]) -> dict[str, Any]:
    """Per delivery (sink record) its latency from its event's reference time."""
    seen: set[tuple[str, str]] = set()
    lat, duplicates, unknown = [], 0, 0
    for path, wid, t in records:
        if wid not in t_of:
            unknown += 1
            continue
        if (path, wid) in seen:
            duplicates += 1
            continue
        seen.add((path, wid))
        lat.append(t - t_of[wid])
    return {"latencies": lat, "unique": len(seen), "duplicates": duplicates,
            "unknown": unknown}


# ---------------------------------------------------------------- phase 1


def _phase1(args: argparse.Namespace, workdir: Path, url: str, config: Path, db: Path,
            sink: str, rate: float, seconds: float, label: Any) -> dict[str, Any]:
    out = workdir / f"loadgen-{label}-{rate:g}.json"
    since = _sink_count(sink)
    proc = subprocess.run([sys.executable, str(HERE / "loadgen.py"), url, str(config),
                           f"{rate:g}", f"{seconds:g}", str(out), "--connections",
                           str(args.loadgen_connections)], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed:\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(out.read_text())
    out.unlink()
    ok = [r for r in data["results"] if r[1] == 200]
    expected = len(SINKS) * len(ok)
    drained, waited = _wait_delivered(db, sink, since, expected, args.drain_timeout)
    records = _sink_records(sink, since)
    t200 = {r[2]: r[4] for r in ok}
    m = _match(records, t200)
    sends = sorted(r[3] for r in data["results"])
    achieved = (len(data["results"]) - 1) / (sends[-1] - sends[0]) if len(sends) > 1 else 0.0
    row = {
        "phase": 1, "round": label, "rate": rate, "seconds": seconds,
        "requests": data["planned"], "answered": len(data["results"]),
        "ok200": len(ok), "non200": len(data["results"]) - len(ok),
        "loadgen_errors": data["errors"], "send_rate_achieved": round(achieved, 1),
        "expected_deliveries": expected, "delivered_unique": m["unique"],
        "duplicates": m["duplicates"], "unknown_ids": m["unknown"],
        "all_delivered": drained and m["unique"] == expected,
        "wait_after_last_200_s": round(waited, 2),
        "latency_ms": _dist_ms(m["latencies"]),
        "latency_ms_by_sink": {p: _dist_ms([t - t200[w] for pp, w, t in records
                                            if pp == p and w in t200])
                               for p in ("/a", "/b", "/c")},
        "ingest_latency_ms": _dist_ms([r[4] - r[3] for r in data["results"]]),
    }
    return row


# ---------------------------------------------------------------- phase 2


def _phase2(wrk: str, args: argparse.Namespace, workdir: Path, url: str, db: Path,
            verifier: Any, sink: str | None, rate_guess: float, label: Any,
            routed: bool, pid: int | None = None) -> dict[str, Any]:
    seconds = args.stream_duration
    count = int(rate_guess * seconds * 2) + 20 * args.connections
    batch = workdir / f"requests-{label}.http"
    ingest._write_batch(batch, verifier, count, url)
    events_before = int(_scalar(db, "SELECT COUNT(*) FROM events"))
    last_id = int(_scalar(db, "SELECT COALESCE(MAX(id), 0) FROM deliveries"))
    since = _sink_count(sink) if sink else 0
    spy = None
    if args.pyspy and routed and pid is not None:
        spy = subprocess.Popen([args.pyspy, "record", "--pid", str(pid), "--threads",
                                "--rate", "100", "--format", "raw", "--output",
                                str(workdir / f"pyspy-{label}.txt")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    with Sampler(db) as sampler:
        data = ingest._run_wrk(wrk, args, url, batch, seconds, "once")
        time.sleep(0.5)
        events = int(_scalar(db, "SELECT COUNT(*) FROM events")) - events_before
        expected = len(SINKS) * events if routed else 0
        drained, _ = (_wait_delivered(db, sink, since, expected, args.drain_timeout)
                      if routed and sink else (True, 0.0))
        time.sleep(1.0)  # one more backlog sample at zero
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    batch.unlink()
    row: dict[str, Any] = {
        "phase": 2, "round": label, "routed": routed, "send_s": seconds,
        "ingest_rps": data["rps"], "ingest_window_s": data["window_s"],
        "ok200": data["ok200"], "non2xx": data["non2xx"], "duplicates_200": data["duplicates"],
        "events_stored": events, "stored_minus_200": events - data["ok200"],
        "in_flight_at_stop": data["sent"] - data["responses"],
        "exhausted": bool(data["exhausted"]),
        "ingest_p50_ms": data["latency_us"]["p50"] / 1000,
        "ingest_p99_ms": data["latency_us"]["p99"] / 1000,
        "socket_errors": {k: v for k, v in data["wrk"]["errors"].items() if k != "status"},
    }
    if not routed or not sink:
        return row
    with contextlib.closing(_db(db)) as c:
        created = dict(c.execute("SELECT event_id, created_at FROM deliveries WHERE id > ?",
                                 (last_id,)).fetchall())
    t_start, t_end = min(created.values()), max(created.values())
    records = _sink_records(sink, since)
    m = _match(records, created)
    arrivals = sorted(r[2] for r in records)
    during = sum(1 for t in arrivals if t <= t_end)
    last = arrivals[-1] if arrivals else t_end
    after = len(arrivals) - during
    samples = [(round(t - t_start, 2), n) for t, n in sampler.samples]
    in_stream = [(t, n) for t, n in samples if 0 <= t <= t_end - t_start]
    row.update({
        "stream_window_s": round(t_end - t_start, 3),
        "expected_deliveries": expected, "delivered_unique": m["unique"],
        "duplicates": m["duplicates"], "unknown_ids": m["unknown"],
        "all_delivered": drained and m["unique"] == expected,
        "deliveries_during_stream": during,
        "deliveries_per_s_during_stream": round(during / (t_end - t_start), 1),
        "deliveries_per_s_overall": round(len(arrivals) / (last - t_start), 1),
        "deliveries_per_s_after_stream": round(after / (last - t_end), 1) if last > t_end
        else None,
        "events_per_s_db_window": round(events / (t_end - t_start), 1),
        "needed_deliveries_per_s": round(len(SINKS) * data["rps"], 1),
        "drain_s_after_stream": round(max(0.0, last - t_end), 2),
        "backlog_at_stream_end": _backlog_at(samples, t_end - t_start),
        "backlog_max": max((n for _, n in samples), default=0),
        "backlog_growth_per_s_during_stream": _slope(in_stream),
        "backlog_samples": samples,
        "latency_from_row_created_ms": _dist_ms(m["latencies"]),
        "db": _delivery_stats(db, last_id),
    })
    keeps = (row["deliveries_per_s_during_stream"] >= 0.95 * row["needed_deliveries_per_s"]
             and row["drain_s_after_stream"] <= 2.0)
    row["keeps_up"] = keeps
    return row


def _backlog_at(samples: list[tuple[float, int]], t: float) -> int | None:
    before = [n for s, n in samples if s <= t]
    return before[-1] if before else None


def _slope(points: list[tuple[float, int]]) -> float | None:
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den, 1) \
        if den else None


# ---------------------------------------------------------------- main


def main() -> int:
    args = _parser().parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("run.py: wrk is not installed. On Debian/Ubuntu: sudo apt-get update && "
              "sudo apt-get install -y wrk", file=sys.stderr)
        return 2
    rates = [float(x) for x in args.rates.split(",") if x]
    concurrencies = [args.concurrency] + [int(x) for x in args.also_concurrency.split(",") if x]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hookyard-fanout-"))
    workdir.mkdir(parents=True, exist_ok=True)
    machine = ingest._machine(wrk, workdir)
    machine["packages"]["httpx"] = ingest._version("httpx")
    print(ingest._machine_line(machine), flush=True)
    results: dict[str, Any] = {
        "benchmark": "fan-out: webhooks to hookyard, 3 HTTP deliveries per event to a local sink",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.executable).as_posix(), "bench/delivery/run.py",
                             *sys.argv[1:]]),
        "settings": {"rates": rates, "duration_s": args.duration, "rounds": args.rounds,
                     "stream_duration_s": args.stream_duration,
                     "connections": args.connections, "threads": args.threads,
                     "loadgen_connections": args.loadgen_connections,
                     "concurrencies": concurrencies, "sink_timeout_s": 10,
                     "whatif_no_sniff": args.whatif_no_sniff,
                     "sinks": "3 http sinks a,b,c with whsec_ secrets, 3 routes * -> one sink",
                     "workdir": str(workdir)},
        "machine": machine,
        "code": ingest._code_version(),
        "ingest_benchmark": _ingest_reference(),
        "runs": [],
    }
    sink_cm, sink = _sink_server(workdir)
    with sink_cm:
        base_cfg = _config(workdir, "noroutes", sink, concurrencies[0], routed=False)
        verifier = ingest._verifier(base_cfg)
        base_cm, base_url, _ = _hookyard(base_cfg, workdir, "noroutes")
        with base_cm:
            if not args.skip_phase2:
                ingest._run_wrk(wrk, args, base_url,
                                _warm_batch(workdir, verifier, base_url), args.warmup, "once")
            for conc in concurrencies:
                main_run = conc == concurrencies[0]
                tag = f"fanout-c{conc}"
                cfg = _config(workdir, tag, sink, conc, routed=True)
                db = workdir / f"{tag}.db"
                cm, url, _port = _hookyard(cfg, workdir, tag, whatif=args.whatif_no_sniff)
                with cm as proc:
                    print(f"\n== sink concurrency {conc} (hookyard pid {proc.pid}) ==",
                          flush=True)
                    _phase1(args, workdir, url, cfg, db, sink, 100, args.warmup, "warmup")
                    rounds = args.rounds if main_run else args.also_rounds
                    for n in range(1, rounds + 1):
                        for rate in rates:
                            row = _phase1(args, workdir, url, cfg, db, sink, rate,
                                          args.duration, n)
                            row["concurrency"] = conc
                            results["runs"].append(row)
                            print(_line1(row), flush=True)
                    rate_guess = args.initial_rate
                    for n in range(1, (0 if args.skip_phase2 else rounds) + 1):
                        targets = (["noroutes", "fanout"] if main_run else ["fanout"])
                        for target in targets:
                            if target == "noroutes":
                                row = _phase2(wrk, args, workdir, base_url,
                                              workdir / "noroutes.db", verifier, None,
                                              rate_guess, n, routed=False)
                            else:
                                row = _phase2(wrk, args, workdir, url, db, verifier, sink,
                                              rate_guess, f"c{conc}-{n}", routed=True,
                                              pid=proc.pid)
                            rate_guess = max(rate_guess, row["ingest_rps"])
                            row["round"] = n
                            row["concurrency"] = conc
                            results["runs"].append(row)
                            print(_line2(row), flush=True)
    results["summary"] = _summary(results["runs"], concurrencies, rates)
    _print_summary(results)
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"kept {workdir} (configs, databases, server logs)")
    return 0 if results["summary"]["targets"]["all_met"] else 1


def _warm_batch(workdir: Path, verifier: Any, url: str) -> Path:
    path = workdir / "warm.http"
    ingest._write_batch(path, verifier, 20000, url)
    return path


def _ingest_reference() -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        d = json.loads(INGEST_RESULTS.read_text())
        return {"hookyard_rps_median": d["summary"]["hookyard_rps_median"],
                "started_at": d["started_at"], "commit": d.get("code", {}).get("commit"),
                "routed_sink": d["settings"].get("routed_sink", "none")}
    return None


def _line1(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    return (f"phase1 c={r['concurrency']} round {r['round']} {r['rate']:5g}/s: sent at "
            f"{r['send_rate_achieved']}/s, 200s {r['ok200']}, delivered {r['delivered_unique']}"
            f"/{r['expected_deliveries']} dup {r['duplicates']}; 200→sink p50 {lat['p50']} "
            f"p90 {lat['p90']} p99 {lat['p99']} max {lat['max']} ms; ingest p50 "
            f"{r['ingest_latency_ms']['p50']} p99 {r['ingest_latency_ms']['p99']} ms")


def _line2(r: dict[str, Any]) -> str:
    head = (f"phase2 c={r['concurrency']} round {r['round']} "
            f"{'fanout' if r['routed'] else 'noroutes':<8} ingest {r['ingest_rps']:8.1f} ev/s "
            f"(p50 {r['ingest_p50_ms']:.1f} p99 {r['ingest_p99_ms']:.1f} ms, non-2xx "
            f"{r['non2xx']}, stored-200 {r['stored_minus_200']})")
    if not r["routed"]:
        return head
    return (head + f"\n       deliveries/s during {r['deliveries_per_s_during_stream']} "
            f"(need {r['needed_deliveries_per_s']}), overall {r['deliveries_per_s_overall']}, "
            f"after stream {r['deliveries_per_s_after_stream']}; backlog at end "
            f"{r['backlog_at_stream_end']} max {r['backlog_max']} growth "
            f"{r['backlog_growth_per_s_during_stream']}/s; drain {r['drain_s_after_stream']} s;"
            f" delivered {r['delivered_unique']}/{r['expected_deliveries']} dup "
            f"{r['duplicates']}; keeps up: {'yes' if r['keeps_up'] else 'NO'}")


def _summary(runs: list[dict[str, Any]], concurrencies: list[int],
             rates: list[float]) -> dict[str, Any]:
    med = statistics.median
    s: dict[str, Any] = {"by_concurrency": {}}
    for conc in concurrencies:
        c: dict[str, Any] = {"phase1": {}, "phase2": {}}
        for rate in rates:
            rows = [r for r in runs if r["phase"] == 1 and r["concurrency"] == conc
                    and r["rate"] == rate]
            if rows:
                c["phase1"][f"{rate:g}"] = {
                    k: med(r["latency_ms"][k] for r in rows) for k in ("p50", "p90", "p99")
                } | {"max_worst": max(r["latency_ms"]["max"] for r in rows),
                     "p50_per_round": [r["latency_ms"]["p50"] for r in rows],
                     "p99_per_round": [r["latency_ms"]["p99"] for r in rows],
                     "all_delivered": all(r["all_delivered"] for r in rows),
                     "duplicates": sum(r["duplicates"] for r in rows)}
        fan = [r for r in runs if r["phase"] == 2 and r["concurrency"] == conc and r["routed"]]
        base = [r for r in runs if r["phase"] == 2 and r["concurrency"] == conc
                and not r["routed"]]
        if fan:
            keys = ("ingest_rps", "deliveries_per_s_during_stream", "deliveries_per_s_overall",
                    "deliveries_per_s_after_stream", "drain_s_after_stream",
                    "backlog_at_stream_end", "backlog_max", "backlog_growth_per_s_during_stream")
            c["phase2"] = {k: med(r[k] for r in fan if r[k] is not None) for k in keys}
            c["phase2"] |= {f"{k}_per_round": [r[k] for r in fan] for k in keys}
            c["phase2"]["latency_p50_ms_median"] = med(
                r["latency_from_row_created_ms"]["p50"] for r in fan)
            c["phase2"]["latency_p99_ms_median"] = med(
                r["latency_from_row_created_ms"]["p99"] for r in fan)
            c["phase2"]["keeps_up_per_round"] = [r["keeps_up"] for r in fan]
            c["phase2"]["all_delivered"] = all(r["all_delivered"] for r in fan)
        if base:
            c["phase2"]["noroutes_ingest_rps_median"] = med(r["ingest_rps"] for r in base)
            c["phase2"]["noroutes_ingest_rps_per_round"] = [r["ingest_rps"] for r in base]
        s["by_concurrency"][str(conc)] = c
    main = s["by_concurrency"][str(concurrencies[0])]
    ref = _ingest_reference()
    ref_rps = ref["hookyard_rps_median"] if ref else None
    p2 = main["phase2"]
    if not p2:
        s["targets"] = {"p50_lt_50ms": {k: v["p50"] < TARGET_P50_MS
                                        for k, v in main["phase1"].items()}}
        s["targets"]["all_met"] = all(s["targets"]["p50_lt_50ms"].values())
        return s
    s["targets"] = {
        "p50_lt_50ms": {k: v["p50"] < TARGET_P50_MS for k, v in main["phase1"].items()},
        "keeps_up_with_own_ingest": bool(p2) and all(p2["keeps_up_per_round"]),
        "delivery_capacity_ge_3x_ingest_benchmark": (
            bool(p2) and ref_rps is not None
            and p2["deliveries_per_s_after_stream"] >= 3 * ref_rps),
        "delivery_capacity_ge_3x_noroutes_ingest_now": (
            bool(p2) and "noroutes_ingest_rps_median" in p2
            and p2["deliveries_per_s_after_stream"] >= 3 * p2["noroutes_ingest_rps_median"]),
    }
    t = s["targets"]
    t["all_met"] = (all(t["p50_lt_50ms"].values()) and t["keeps_up_with_own_ingest"]
                    and t["delivery_capacity_ge_3x_ingest_benchmark"])
    return s


def _print_summary(results: dict[str, Any]) -> None:
    s = results["summary"]
    print("\n== summary (medians over rounds) ==")
    for conc, c in s["by_concurrency"].items():
        for rate, p in c["phase1"].items():
            print(f"c={conc} phase1 {rate}/s: 200→sink p50 {p['p50']} p90 {p['p90']} p99 "
                  f"{p['p99']} ms (p50 per round {p['p50_per_round']}, p99 "
                  f"{p['p99_per_round']}), all delivered {p['all_delivered']}")
        p2 = c["phase2"]
        if p2:
            print(f"c={conc} phase2: ingest {p2['ingest_rps']:.1f} ev/s with fan-out"
                  + (f", {p2['noroutes_ingest_rps_median']:.1f} without routes"
                     if "noroutes_ingest_rps_median" in p2 else "")
                  + f"; deliveries/s during {p2['deliveries_per_s_during_stream']}, overall "
                  f"{p2['deliveries_per_s_overall']}, drain-only "
                  f"{p2['deliveries_per_s_after_stream']}; drain {p2['drain_s_after_stream']} s;"
                  f" backlog max {p2['backlog_max']}; keeps up {p2['keeps_up_per_round']}")
    print("targets: " + json.dumps(s["targets"]))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="100,500", help="phase 1 webhook rates, per second")
    p.add_argument("--duration", type=float, default=20.0, help="phase 1 seconds per rate")
    p.add_argument("--rounds", type=int, default=2, help="repetitions of every measurement")
    p.add_argument("--stream-duration", type=float, default=15.0,
                   help="phase 2 seconds of sending as fast as hookyard answers")
    p.add_argument("--connections", type=int, default=64, help="phase 2 wrk connections")
    p.add_argument("--threads", type=int, default=1, help="phase 2 wrk threads")
    p.add_argument("--tail", type=float, default=3.0, help="wrk drain tail (as bench/ingest)")
    p.add_argument("--timeout", type=float, default=10.0, help="wrk --timeout, seconds")
    p.add_argument("--warmup", type=float, default=3.0, help="unrecorded warm-up seconds")
    p.add_argument("--initial-rate", type=float, default=2000.0,
                   help="events/s assumed when sizing the first phase 2 batch")
    p.add_argument("--loadgen-connections", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=16, help="`concurrency` of each sink")
    p.add_argument("--also-concurrency", default="4",
                   help="further sink concurrencies to measure (comma list; '' for none)")
    p.add_argument("--also-rounds", type=int, default=2,
                   help="rounds for the --also-concurrency values")
    p.add_argument("--drain-timeout", type=float, default=240.0,
                   help="give up waiting for the backlog after this many seconds")
    p.add_argument("--pyspy", metavar="PATH",
                   help="record a py-spy profile (raw collapsed stacks, 100 Hz, all threads) "
                        "of hookyard during every fan-out phase 2 run into the work dir")
    p.add_argument("--whatif-no-sniff", action="store_true",
                   help="start the fan-out hookyard through bench/delivery/whatif_no_sniff.py "
                        "(httpcore's per-call `import sniffio` short-cut; an experiment, "
                        "not hookyard as shipped)")
    p.add_argument("--skip-phase2", action="store_true", help="latency phase only")
    p.add_argument("--workdir")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--out", default=str(HERE / "results.json"))
    return p


if __name__ == "__main__":
    raise SystemExit(main())
