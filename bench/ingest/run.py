"""Ingest benchmark: hookyard's POST /hooks/{source} against a bare Starlette endpoint.

    .venv/bin/python bench/ingest/run.py [--rounds 3] [--duration 15] [--connections 64]
                                             [--threads 1]

Starts `hookyard serve` (a rendergrid source, one jsonl sink routed `*`, a temp SQLite file)
and `python -m uvicorn bench.ingest.bare_app:app` with the uvicorn settings `hookyard serve`
uses, then runs wrk against them alternately (A B A B ...). Every hookyard round replays a
freshly pre-signed batch of unique Rendergrid creation webhooks (bench/ingest/requests.lua
explains how wrk sends them and why every sent request is answered before wrk stops). After
each hookyard round the rows added to the `events` table are compared with the 200s wrk saw.

Prints a table and writes bench/ingest/results.json. Method and numbers: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LUA = HERE / "requests.lua"
SOURCE = "rendergrid"
SECRET = "bench-rendergrid-secret-0123456789"
TOLERANCE_S = 300
TARGET_RATIO = 0.5
TARGET_P99_MS = 25.0
DATABASE = ""  # --database, else the run's own SQLite file
MODULE = "receiver.cli"  # --module: a what-if launcher instead (bench/ingest/whatif.py)
WORKERS = 0  # --workers: N web processes for both (hookyard serve --workers N, uvicorn --workers N)

# The server and the signed Rendergrid source every benchmark config starts with (format with
# database= and secret=; bench/steady and bench/retention add their sinks and settings).
CONFIG_HEAD = """\
[server]
host = "127.0.0.1"
database = "{database}"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["{secret}"]
"""
CONFIG = CONFIG_HEAD + """\
tolerance_s = {tolerance}

[sinks.log]
type = "jsonl"
path = "{jsonl}"
"""
# --with-sink: every event is also delivered to the jsonl sink while the benchmark runs, so
# the number measures ingest sharing the process with delivery (fsync per delivery batch).
ROUTE = """
[[routes]]
sources = ["*"]
types = ["*"]
sinks = ["log"]
"""

# The keyword arguments `hookyard serve` passes to uvicorn.run (receiver/cli.py, cmd_serve),
# as uvicorn command-line flags for the bare app. loop/http are left at uvicorn's "auto"
# (uvloop + httptools when installed) in both; one worker in both.
UVICORN_FLAGS = ["--loop", "auto", "--http", "auto", "--workers", "1", "--no-access-log",
                 "--lifespan", "on", "--no-server-header", "--timeout-graceful-shutdown", "10"]


def main() -> int:
    global WORKERS, MODULE
    args = _parser().parse_args()
    WORKERS = args.workers
    MODULE = args.module
    wrk = shutil.which("wrk")
    if wrk is None:
        print("run.py: wrk is not installed. On Debian/Ubuntu: sudo apt-get update && "
              "sudo apt-get install -y wrk  (elsewhere: https://github.com/wg/wrk)",
              file=sys.stderr)
        return 2
    if args.threads < 1 or args.connections < args.threads:
        print("run.py: need 1 <= --threads <= --connections", file=sys.stderr)
        return 2
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hookyard-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "hookyard.db"
    config = workdir / "hookyard.toml"
    global DATABASE
    DATABASE = args.database or f"sqlite:///{db}"
    config.write_text(CONFIG.format(database=DATABASE, secret=SECRET, tolerance=TOLERANCE_S,
                                    jsonl=workdir / "events.jsonl")
                      + (ROUTE if args.with_sink else ""))
    verifier = _verifier(config)
    machine = _machine(wrk, workdir)
    print(_machine_line(machine), flush=True)

    results: dict[str, Any] = {
        "benchmark": "ingest: hookyard POST /hooks/rendergrid vs bare Starlette",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.executable).as_posix(), "bench/ingest/run.py",
                             *sys.argv[1:]]),
        "settings": {"rounds": args.rounds, "duration_s": args.duration, "tail_s": args.tail,
                     "warmup_s": args.warmup, "connections": args.connections,
                     "threads": args.threads, "wrk_timeout_s": args.timeout,
                     "uvicorn_flags_bare": UVICORN_FLAGS, "workdir": str(workdir),
                     "sqlite_synchronous": "FULL (hookyard's own setting, unchanged)",
                     "routed_sink": "jsonl, every event" if args.with_sink else "none"},
        "machine": machine,
        "code": _code_version(),
        "rounds": [],
    }
    with _servers(config, workdir) as (hook_url, bare_url):
        bare_batch = workdir / "bare-requests.http"
        _write_batch(bare_batch, verifier, args.bare_batch, bare_url)
        rate_guess = float(args.initial_rate)
        if args.warmup > 0:
            print(f"warm-up: {args.warmup:g} s each", flush=True)
            warm = _hook_round(wrk, args, hook_url, db, verifier, workdir, rate_guess,
                               args.warmup, "warmup")
            rate_guess = max(rate_guess, warm["rps"])
            _bare_round(wrk, args, bare_url, bare_batch, args.warmup)
        for number in range(1, args.rounds + 1):
            for target in ("hookyard", "bare"):
                if target == "hookyard":
                    row = _hook_round(wrk, args, hook_url, db, verifier, workdir, rate_guess,
                                      args.duration, number)
                    rate_guess = max(rate_guess, row["rps"])
                else:
                    row = _bare_round(wrk, args, bare_url, bare_batch, args.duration)
                row["round"] = number
                results["rounds"].append(row)
                print(_row_line(row), flush=True)
    results["summary"] = _summary(results["rounds"], args.connections)
    _print_summary(results)
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"kept {workdir} (config, database, server logs)")
    return 0 if results["summary"]["targets"]["all_met"] else 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds; each is one hookyard run then one bare run")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of sending per run")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=1,
                   help="wrk threads (default 1: on a 2-core machine wrk shares the CPU with "
                        "the server; one wrk thread keeps 64 connections busy)")
    p.add_argument("--tail", type=float, default=3.0,
                   help="seconds wrk keeps running after sending stops, to drain answers")
    p.add_argument("--timeout", type=float, default=10.0, help="wrk --timeout, seconds")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="seconds of unrecorded warm-up per server")
    p.add_argument("--initial-rate", type=float, default=4000.0,
                   help="requests/s assumed when sizing the first hookyard batch")
    p.add_argument("--bare-batch", type=int, default=20000,
                   help="distinct requests the bare runs cycle through")
    p.add_argument("--workdir", help="where the config, SQLite file and logs go (default: a new "
                                     "temp dir, removed afterwards unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    p.add_argument("--with-sink", action="store_true",
                   help="route every event to a jsonl sink too (ingest while delivering); "
                        "default: events are stored and routed nowhere")
    p.add_argument("--out", default=str(HERE / "results.json"))
    p.add_argument("--database", help="a postgresql:// URL to store into (default: a new SQLite "
                   "file in the work dir); the events table should start empty")
    p.add_argument("--workers", type=int, default=0,
                   help="web processes for both servers (default: one process each)")
    p.add_argument("--module", default="receiver.cli",
                   help="run hookyard through this module (a what-if launcher such as "
                   "bench.ingest.whatif) instead of receiver.cli")
    return p


# ---------------------------------------------------------------- requests


def _verifier(config: Path) -> Any:
    sys.path.insert(0, str(ROOT))
    from receiver import settings
    from receiver.core import signing

    src = settings.load(str(config)).sources[SOURCE]
    return signing.build_verifier(src.signature, src.secrets, src.tolerance_s,
                                  where=f"sources.{SOURCE}.signature")


def _body(creation_id: str) -> bytes:
    doc = {"event": "creation.completed", "id": creation_id, "status": "completed",
           "result_urls": [f"https://cdn.rendergrid.io/images/bench/{creation_id}_0.jpg"],
           "cost": 0.1}
    return json.dumps(doc, separators=(",", ":")).encode()


def _write_batch(path: Path, verifier: Any, count: int, url: str) -> int:
    """`count` unique creations (fresh uuid4 ids), signed now with hookyard's signing code, as
    complete HTTP/1.1 requests for `url` in the format bench/ingest/requests.lua reads."""
    target = httpx.URL(url)
    host = f"{target.host}:{target.port}"
    now = time.time()
    with path.open("wb") as f:
        f.write(b"hookyard-bench-requests 1\n")
        for _ in range(count):
            creation = str(uuid.uuid4())
            body = _body(creation)
            headers = {"Host": host, "Content-Type": "application/json",
                       **verifier.sign(body, now=now),
                       "X-Webhook-Event": "creation.completed",
                       "X-Webhook-Delivery-ID": str(uuid.uuid4()),
                       "Content-Length": str(len(body))}
            head = f"POST {target.raw_path.decode()} HTTP/1.1\r\n" + "".join(
                f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
            raw = head.encode() + body
            f.write(b"%d\n" % len(raw) + raw)
    return count


# ---------------------------------------------------------------- runs


def _run_wrk(wrk: str, args: argparse.Namespace, url: str, batch: Path, seconds: float,
             mode: str) -> dict[str, Any]:
    run_s = math.ceil(seconds + args.tail)
    cmd = [wrk, "-t", str(args.threads), "-c", str(args.connections), "-d", f"{run_s}s",
           "--timeout", f"{math.ceil(args.timeout)}s", "--latency", "-s", str(LUA), url,
           "--", str(batch), str(args.threads), f"{seconds:g}", mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    data = None
    for line in proc.stdout.splitlines():
        if line.startswith("HOOKYARD_BENCH_JSON "):
            data = json.loads(line.removeprefix("HOOKYARD_BENCH_JSON "))
    if proc.returncode != 0 or data is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    data["wrk_command"] = " ".join(cmd)
    data["wrk_text"] = [ln for ln in proc.stdout.splitlines()
                        if not ln.startswith("HOOKYARD_BENCH_JSON ")]
    return data


def _stored(db: Path) -> int:
    if DATABASE.startswith("postgres"):
        import psycopg

        with psycopg.connect(DATABASE) as conn:
            row = conn.execute("SELECT COUNT(*) FROM events").fetchone()
            return int(row[0]) if row else 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as c:
        return int(c.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def _settled_count(db: Path, timeout: float = 10.0) -> int:
    """The events count once it stops moving (answers in flight when wrk stopped, if any)."""
    last = _stored(db)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = _stored(db)
        if current == last:
            return current
        last = current
    return last


def _hook_round(wrk: str, args: argparse.Namespace, url: str, db: Path, verifier: Any,
                workdir: Path, rate_guess: float, seconds: float, number: Any) -> dict[str, Any]:
    count = int(rate_guess * seconds * 2) + 20 * args.connections
    batch = workdir / f"hookyard-requests-{number}.http"
    t0 = time.monotonic()
    _write_batch(batch, verifier, count, url)
    signing_s = time.monotonic() - t0
    before = _settled_count(db)
    data = _run_wrk(wrk, args, url, batch, seconds, "once")
    after = _settled_count(db)
    batch.unlink()
    stored = after - before
    row = _row("hookyard", data, seconds)
    row.update(batch_size=count, presign_s=round(signing_s, 2), stored=stored,
               stored_minus_200=stored - data["ok200"],
               in_flight_at_stop=data["sent"] - data["responses"])
    return row


def _bare_round(wrk: str, args: argparse.Namespace, url: str, batch: Path,
                seconds: float) -> dict[str, Any]:
    data = _run_wrk(wrk, args, url, batch, seconds, "wrap")
    row = _row("bare", data, seconds)
    row.update(in_flight_at_stop=data["sent"] - data["responses"])
    return row


def _row(target: str, data: dict[str, Any], seconds: float) -> dict[str, Any]:
    lat = data["latency_us"]
    return {
        "target": target,
        "rps": data["rps"],
        "window_s": data["window_s"],
        "send_s": seconds,
        "responses": data["responses"],
        "sent": data["sent"],
        "ok200": data["ok200"],
        "non2xx": data["non2xx"],
        "statuses": data["statuses"],
        "duplicates": data["duplicates"],
        "exhausted": bool(data["exhausted"]),
        "p50_ms": lat["p50"] / 1000,
        "p90_ms": lat["p90"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "p999_ms": lat["p99.9"] / 1000,
        "max_ms": lat["max"] / 1000,
        "socket_errors": {k: v for k, v in data["wrk"]["errors"].items() if k != "status"},
        "wrk_requests_per_s_incl_tail": round(
            data["wrk"]["requests"] / (data["wrk"]["duration_us"] / 1e6), 1),
        "wrk_command": data["wrk_command"],
        "wrk_text": data["wrk_text"],
    }


# ---------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(proc: subprocess.Popen[bytes], url: str, log: Path, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1)
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start:\n{log.read_text()}")


@contextlib.contextmanager
def _servers(config: Path, workdir: Path) -> Iterator[tuple[str, str]]:
    """hookyard (as tests/support.py Server starts it) and the bare app, both on 127.0.0.1."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("WEB_CONCURRENCY", None)
    hook_port, bare_port = _free_port(), _free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        hook_log = workdir / "hookyard.log"
        with hook_log.open("ab") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", MODULE, "serve", "--config", str(config),
                 "--host", "127.0.0.1", "--port", str(hook_port),
                 *(["--workers", str(WORKERS)] if WORKERS else [])],
                cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env))
        _wait(procs[0], f"http://127.0.0.1:{hook_port}/readyz", hook_log, "hookyard")
        bare_log = workdir / "bare.log"
        with bare_log.open("ab") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "bench.ingest.bare_app:app",
                 "--host", "127.0.0.1", "--port", str(bare_port), *UVICORN_FLAGS,
                 *(["--workers", str(WORKERS)] if WORKERS else [])],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env))
        _wait(procs[1], f"http://127.0.0.1:{bare_port}/hooks/x", bare_log, "bare app")
        yield (f"http://127.0.0.1:{hook_port}/hooks/{SOURCE}",
               f"http://127.0.0.1:{bare_port}/hooks/{SOURCE}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
            if proc.poll() is None:
                proc.kill()


# ---------------------------------------------------------------- machine and summary


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _machine(wrk: str, workdir: Path) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    fs = subprocess.run(["df", "-T", str(workdir)], capture_output=True, text=True, check=False)
    fs_type = fs.stdout.splitlines()[-1].split()[1] if fs.returncode == 0 else "unknown"
    wrk_v = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {n: _version(n) for n in ("uvicorn", "starlette", "uvloop", "httptools",
                                             "aiosqlite", "structlog")},
        "sqlite": sqlite3.sqlite_version,
        "wrk": (wrk_v.stdout.splitlines() or ["?"])[0].strip(),
        "workdir_fs": fs_type,
    }


def _code_version() -> dict[str, Any]:
    """The commit measured, and whether receiver/ or handlers/ differ from it (read-only git)."""
    def git(*argv: str) -> str:
        proc = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,
                              check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""
    return {"commit": git("rev-parse", "HEAD") or None,
            "uncommitted_server_changes": bool(git("status", "--porcelain", "--",
                                                   "receiver", "handlers"))}


def _machine_line(m: dict[str, Any]) -> str:
    pk = m["packages"]
    return (f"{m['nproc']} CPUs ({m['cpu_model']}), {m['ram_gib']} GiB, Python {m['python']}, "
            f"uvicorn {pk['uvicorn']}, starlette {pk['starlette']}, uvloop {pk['uvloop']}, "
            f"httptools {pk['httptools']}, SQLite {m['sqlite']}, {m['wrk']}, "
            f"DB on {m['workdir_fs']}")


def _row_line(r: dict[str, Any]) -> str:
    extra = ""
    if r["target"] == "hookyard":
        extra = (f" stored={r['stored']} (200s {r['ok200']}, diff {r['stored_minus_200']:+d})"
                 f" dup={r['duplicates']}")
    flags = " EXHAUSTED" if r["exhausted"] else ""
    return (f"round {r['round']} {r['target']:<8} {r['rps']:9.1f} req/s"
            f"  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  non-2xx {r['non2xx']}"
            f"  in-flight {r['in_flight_at_stop']}{extra}{flags}")


def _summary(rounds: list[dict[str, Any]], connections: int) -> dict[str, Any]:
    hook = [r for r in rounds if r["target"] == "hookyard"]
    bare = [r for r in rounds if r["target"] == "bare"]
    ratios = [h["rps"] / b["rps"] for h, b in zip(hook, bare, strict=True)]
    med = statistics.median
    s: dict[str, Any] = {
        "hookyard_rps_median": med(r["rps"] for r in hook),
        "bare_rps_median": med(r["rps"] for r in bare),
        "ratio_per_round": ratios,
        "hookyard_p50_ms_median": med(r["p50_ms"] for r in hook),
        "hookyard_p99_ms_median": med(r["p99_ms"] for r in hook),
        "hookyard_p99_ms_worst": max(r["p99_ms"] for r in hook),
        "bare_p50_ms_median": med(r["p50_ms"] for r in bare),
        "bare_p99_ms_median": med(r["p99_ms"] for r in bare),
        "non2xx_total": {"hookyard": sum(r["non2xx"] for r in hook),
                         "bare": sum(r["non2xx"] for r in bare)},
        "stored_total": sum(r["stored"] for r in hook),
        "ok200_total": sum(r["ok200"] for r in hook),
        "stored_minus_200_per_round": [r["stored_minus_200"] for r in hook],
        "duplicates_total": sum(r["duplicates"] for r in hook),
        "in_flight_at_stop_total": sum(r["in_flight_at_stop"] for r in rounds),
        "socket_errors_total": sum(sum(r["socket_errors"].values()) for r in rounds),
        "any_exhausted": any(r["exhausted"] for r in rounds),
    }
    s["ratio_of_medians"] = s["hookyard_rps_median"] / s["bare_rps_median"]
    s["ratio_median"] = med(ratios)
    stored_ok = all(r["stored_minus_200"] == 0 for r in hook)
    bounded = all(0 <= r["stored_minus_200"] <= connections for r in hook)
    s["targets"] = {
        "ratio_ge_0_5": s["ratio_of_medians"] >= TARGET_RATIO,
        "zero_non2xx": s["non2xx_total"]["hookyard"] == 0,
        "p99_lt_25ms": s["hookyard_p99_ms_median"] < TARGET_P99_MS,
        "p99_lt_25ms_every_round": s["hookyard_p99_ms_worst"] < TARGET_P99_MS,
        "stored_equals_200": stored_ok,
        "stored_minus_200_within_connections": bounded,
    }
    t = s["targets"]
    t["all_met"] = (t["ratio_ge_0_5"] and t["zero_non2xx"] and t["p99_lt_25ms"]
                    and t["stored_equals_200"])
    return s


def _print_summary(results: dict[str, Any]) -> None:
    s = results["summary"]
    print("\nround  target       req/s    p50 ms   p99 ms  non-2xx      200s    stored")
    for r in results["rounds"]:
        stored = str(r["stored"]) if r["target"] == "hookyard" else "-"
        print(f"{r['round']:>5}  {r['target']:<8} {r['rps']:9.1f} {r['p50_ms']:9.2f}"
              f" {r['p99_ms']:8.2f} {r['non2xx']:8d} {r['ok200']:9d} {stored:>9}")
    t = s["targets"]
    print(f"\nmedian req/s: hookyard {s['hookyard_rps_median']:.1f}, bare "
          f"{s['bare_rps_median']:.1f}; ratio {s['ratio_of_medians']:.3f} "
          f"(per round: {', '.join(f'{x:.3f}' for x in s['ratio_per_round'])})")
    print(f"median p99: hookyard {s['hookyard_p99_ms_median']:.2f} ms (worst "
          f"{s['hookyard_p99_ms_worst']:.2f}), bare {s['bare_p99_ms_median']:.2f} ms")
    print(f"stored {s['stored_total']} vs 200s {s['ok200_total']} "
          f"(per round diff {s['stored_minus_200_per_round']}), duplicates "
          f"{s['duplicates_total']}, in flight at stop {s['in_flight_at_stop_total']}")
    print("targets: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in t.items()))


if __name__ == "__main__":
    raise SystemExit(main())
