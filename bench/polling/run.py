"""Polling benchmark: 10,000 watched jobs against a fake provider, one `hookyard serve`.

    .venv/bin/python bench/polling/run.py [--runs 2] [--jobs 10000] [--rate 200]
        [--spread 120] [--provider genly|revid] [--max-interval 10] [--first-delay 1]

Three processes besides this runner, each on 127.0.0.1 under uvicorn:

* the fake provider (bench/polling/fake_provider.py): Genly's `GET /api/renders/{id}` (or
  RevidAPI's `GET /v1/jobs/{id}`), Bearer key checked. Every job has a planned finish time;
  before it the answer is `processing`, from it on `completed` with an output URL. It records
  every status request's arrival time (CLOCK_MONOTONIC) and counts the requests a strict
  sliding-window limiter of the configured rate would refuse (`--enforce`: refuses them, 429).
* the sink (bench/polling/sink_app.py): `POST /events` → 200, keeps webhook-id, job_id, arrival.
* `hookyard serve` (as tests/support.py starts it): one polling source at the fake (`base_url`)
  with `poll_rate_per_s = --rate` as THE configured limit (revid: no own cap by default, the
  provider's documented 1000/min per key is the limit), `poll_first_delay_s`,
  `poll_max_interval_s`, `deadline_s = 3600`; one `http` sink routed `*`; an admin_token.

A run: start the three; plan the jobs at the fake (finish offsets evenly spaced over
[--min-run, --spread] s, shuffled with a fixed seed); register all jobs with POST /v1/jobs
(--reg-connections keep-alive connections, a small asyncio-streams client, timed); then start
the fake's clock (no job can finish before every job is registered) and wait until the sink has
an event for every job (or --time-limit). A sampler thread reads, every 0.5 s, hookyard's CPU
time and RSS (psutil), the fake's and the sink's CPU, the machine's CPU and steal time, and from
hookyard's SQLite file (read-only) how many jobs are watched and how many are overdue
(`next_poll_at <= now`).

Reported per run: polls/s (whole polling window; per-second series median/p95/max; the
*saturated* seconds, when more jobs were overdue than the poller's 32 in-flight slots, i.e.
the scheduler had more work than the limit allowed; max count in any sliding 1 s window vs the
limit), hookyard's CPU share and RSS (idle, registration, polling), the delay from a job's
finish time at the provider to its event at the sink (split at the first `completed` answer),
events vs jobs and duplicates.

Prints a summary and writes bench/polling/results.json. Method and numbers: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from bench.ingest import run as ingest  # noqa: E402

TOKEN = "bench-admin-token-0123456789abcdef"
API_KEY = "bench-provider-key-0123456789"
SOURCE = "bench"
POLLER_CONCURRENCY = 32  # receiver.poller.Poller's default; hookyard serve does not change it
PROVIDER_RATE_PER_S = {"genly": None, "revid": 1000 / 60}  # handlers/providers/*.py rate_per_min
TARGET_WITHIN = 0.05

CONFIG = """\
[server]
host = "127.0.0.1"
database = "sqlite:///{db}"
admin_token = "{token}"

[sources.{source}]
provider = "{provider}"
api_key = "{api_key}"
base_url = "{base_url}"
{rate_line}poll_first_delay_s = {first_delay}
poll_max_interval_s = {max_interval}
deadline_s = {deadline}

[sinks.backend]
type = "http"
url = "{sink_url}/events"

[[routes]]
sources = ["*"]
types = ["*"]
sinks = ["backend"]
"""


def main() -> int:
    args = _parser().parse_args()
    own = args.rate if args.rate and args.rate > 0 else None
    provider_rate = PROVIDER_RATE_PER_S[args.provider]
    limits = [r for r in (own, provider_rate) if r]
    if not limits:
        print("run.py: no limit: give --rate (genly publishes none)", file=sys.stderr)
        return 2
    limit = min(limits)
    machine = _machine()
    print(f"{machine['nproc']} CPUs ({machine['cpu_model']}), Python {machine['python']}, "
          f"load average {machine['loadavg_at_start']}", flush=True)
    results: dict[str, Any] = {
        "benchmark": f"polling: {args.jobs} watched jobs against a fake {args.provider}",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.executable).as_posix(), "bench/polling/run.py",
                             *sys.argv[1:]]),
        "settings": {"provider": args.provider, "jobs": args.jobs,
                     "poll_rate_per_s": own, "provider_rate_per_s": provider_rate,
                     "limit_per_s": limit, "spread_s": args.spread, "min_run_s": args.min_run,
                     "poll_first_delay_s": args.first_delay,
                     "poll_max_interval_s": args.max_interval, "deadline_s": args.deadline,
                     "reg_connections": args.reg_connections, "enforce": args.enforce,
                     "poller_concurrency": POLLER_CONCURRENCY, "seed": args.seed,
                     "time_limit_s": args.time_limit},
        "machine": machine,
        "code": ingest._code_version(),
        "runs": [],
    }
    for number in range(1, args.runs + 1):
        print(f"\n== run {number}/{args.runs}", flush=True)
        run = _one_run(args, own, limit, number)
        results["runs"].append(run)
        _print_run(run)
    results["summary"] = _summary(results["runs"], limit)
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {out}")
    t = results["summary"]["targets"]
    print("targets: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in t.items()))
    return 0 if t["all_met"] else 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--jobs", type=int, default=10000)
    p.add_argument("--provider", choices=sorted(PROVIDER_RATE_PER_S), default="genly")
    p.add_argument("--rate", type=float, default=200.0,
                   help="poll_rate_per_s of the source (0: none, e.g. with --provider revid)")
    p.add_argument("--spread", type=float, default=120.0,
                   help="the last job finishes this many s after the clock starts")
    p.add_argument("--min-run", type=float, default=1.0,
                   help="the first job finishes this many s after the clock starts")
    p.add_argument("--first-delay", type=float, default=1.0, help="poll_first_delay_s")
    p.add_argument("--max-interval", type=float, default=10.0, help="poll_max_interval_s")
    p.add_argument("--deadline", type=float, default=3600.0, help="deadline_s")
    p.add_argument("--reg-connections", type=int, default=32,
                   help="concurrent connections registering jobs")
    p.add_argument("--enforce", action="store_true",
                   help="the fake answers 429 (Retry-After: 1) above the limit")
    p.add_argument("--time-limit", type=float, default=900.0,
                   help="give up waiting for the events after this many s")
    p.add_argument("--pyspy", type=float, default=0.0, metavar="SECONDS",
                   help="profile hookyard with py-spy (record --threads --idle, 100 Hz, folded "
                        "stacks) for this many s, starting 10 s after registration; skews CPU")
    p.add_argument("--seed", type=int, default=20261122)
    p.add_argument("--workdir")
    p.add_argument("--keep", action="store_true", help="keep the work dir (config, DB, logs)")
    p.add_argument("--out", default=str(HERE / "results.json"))
    return p


# ---------------------------------------------------------------- processes


@contextlib.contextmanager
def _process(argv: list[str], log: Path, ready_url: str, what: str,
             cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("WEB_CONCURRENCY", None)
    with log.open("ab") as f:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env)
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


class Sampler(threading.Thread):
    """Every `every` s: CPU time and RSS of hookyard, CPU of the fake and the sink, the
    machine's CPU (busy, steal), and the jobs table's watching / overdue counts."""

    def __init__(self, procs: dict[str, psutil.Process], db: Path, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.procs, self.db, self.every = procs, db, every
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def sample(self) -> dict[str, Any]:
        s: dict[str, Any] = {"t": time.monotonic()}
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                ct = proc.cpu_times()
                s[f"{name}_cpu"] = ct.user + ct.system
                if name == "hookyard":
                    s["hookyard_rss"] = proc.memory_info().rss
        ct = psutil.cpu_times()
        s["sys_busy"] = sum(ct) - ct.idle - getattr(ct, "iowait", 0.0)
        s["sys_total"] = sum(ct)
        s["sys_steal"] = getattr(ct, "steal", 0.0)
        with contextlib.suppress(sqlite3.Error), contextlib.closing(
                sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)) as c:
                now = time.time()
                s["watching"], s["overdue"] = c.execute(
                    "SELECT COUNT(*), COALESCE(SUM(next_poll_at <= ?), 0) FROM jobs "
                    "WHERE state = 'watching'", (now,)).fetchone()
        return s

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(self.sample())
            self.stop.wait(self.every)


# ---------------------------------------------------------------- registration


async def _register(port: int, job_ids: list[str], deadline_s: float,
                    connections: int) -> dict[str, Any]:
    """POST /v1/jobs for every id over `connections` keep-alive connections (asyncio streams,
    not httpx, to take little CPU from the shared cores)."""
    statuses: dict[int, int] = {}
    errors: list[str] = []
    latencies: list[float] = []
    queue = iter(job_ids)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for job_id in queue:
                body = json.dumps({"source": SOURCE, "job_id": job_id,
                                   "deadline_s": deadline_s}).encode()
                head = (f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode()
                t0 = time.monotonic()
                writer.write(head + body)
                status, _ = await _read_answer(reader)
                latencies.append(time.monotonic() - t0)
                statuses[status] = statuses.get(status, 0) + 1
        except Exception as exc:  # report, do not hide
            errors.append(repr(exc))
        finally:
            writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    took = time.monotonic() - t0
    return {"jobs": len(job_ids), "seconds": round(took, 2),
            "per_s": round(len(job_ids) / took, 1), "statuses": statuses, "errors": errors,
            "latency_ms": _dist([x * 1000 for x in latencies])}


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


# ---------------------------------------------------------------- one run


def _one_run(args: argparse.Namespace, own: float | None, limit: float,
             number: int) -> dict[str, Any]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hookyard-bench-polling-"))
    workdir = workdir / f"run{number}"
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "hookyard.db"
    fake_port, sink_port, hook_port = (ingest._free_port() for _ in range(3))
    fake_url, sink_url = f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{sink_port}"
    config = workdir / "hookyard.toml"
    config.write_text(CONFIG.format(
        db=db, token=TOKEN, source=SOURCE, provider=args.provider, api_key=API_KEY,
        base_url=fake_url, rate_line=f"poll_rate_per_s = {own}\n" if own else "",
        first_delay=args.first_delay, max_interval=args.max_interval, deadline=args.deadline,
        sink_url=sink_url))
    rng = random.Random(args.seed + number)
    job_ids = [f"r{number}-{i:05d}" for i in range(args.jobs)]
    offsets = [args.min_run + (args.spread - args.min_run) * i / max(1, args.jobs - 1)
               for i in range(args.jobs)]
    rng.shuffle(offsets)
    plan = dict(zip(job_ids, offsets, strict=True))

    fake_argv = [sys.executable, str(HERE / "fake_provider.py"), "--port", str(fake_port),
                 "--provider", args.provider, "--api-key", API_KEY,
                 "--limit-per-s", str(limit), *(["--enforce"] if args.enforce else [])]
    sink_argv = [sys.executable, "-m", "uvicorn", "bench.polling.sink_app:app", "--host",
                 "127.0.0.1", "--port", str(sink_port), *ingest.UVICORN_FLAGS]
    hook_argv = [sys.executable, "-m", "receiver.cli", "serve", "--config", str(config),
                 "--host", "127.0.0.1", "--port", str(hook_port)]
    run: dict[str, Any] = {"run": number, "workdir": str(workdir)}
    with contextlib.ExitStack() as stack:
        fake = stack.enter_context(_process(fake_argv, workdir / "fake.log",
                                            f"{fake_url}/control/count", "fake provider", ROOT))
        sink = stack.enter_context(_process(sink_argv, workdir / "sink.log",
                                            f"{sink_url}/count", "sink", ROOT))
        hook = stack.enter_context(_process(hook_argv, workdir / "hookyard.log",
                                            f"http://127.0.0.1:{hook_port}/readyz",
                                            "hookyard", workdir))
        client = stack.enter_context(httpx.Client(timeout=60))
        hp = psutil.Process(hook.pid)
        procs = {"hookyard": hp, "fake": psutil.Process(fake.pid),
                 "sink": psutil.Process(sink.pid), "runner": psutil.Process()}
        client.post(f"{fake_url}/control/plan", json={"jobs": plan}).raise_for_status()
        sampler = Sampler(procs, db)
        marks: dict[str, dict[str, Any]] = {}
        time.sleep(2.0)
        marks["idle_start"] = sampler.sample()
        sampler.start()
        time.sleep(3.0)
        marks["reg_start"] = sampler.sample()
        print(f"registering {args.jobs} jobs over {args.reg_connections} connections ...",
              flush=True)
        run["registration"] = _runner()(_register(hook_port, job_ids, args.deadline,
                                                  args.reg_connections))
        marks["reg_end"] = sampler.sample()
        origin = time.monotonic()
        client.post(f"{fake_url}/control/start", json={"origin": origin}).raise_for_status()
        reg = run["registration"]
        print(f"registered in {reg['seconds']} s ({reg['per_s']}/s), statuses "
              f"{reg['statuses']}; clock started", flush=True)
        deadline = origin + args.spread + args.time_limit
        spy = None
        if args.pyspy > 0:
            time.sleep(10)
            pyspy = Path(sys.executable).with_name("py-spy")
            run["pyspy_folded"] = str(HERE / f"profile-run{number}.folded")
            spy = subprocess.Popen([str(pyspy), "record", "--pid", str(hook.pid), "--threads",
                                    "--idle", "--rate", "100", "--duration",
                                    str(int(args.pyspy)), "--format", "raw", "--output",
                                    run["pyspy_folded"]], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.STDOUT)
        last_print = 0.0
        count = 0
        while time.monotonic() < deadline:
            count = int(client.get(f"{sink_url}/count").text)
            if count >= args.jobs:
                break
            if time.monotonic() - last_print > 15:
                last_print = time.monotonic()
                s = sampler.samples[-1] if sampler.samples else {}
                print(f"  t+{time.monotonic() - origin:6.1f} s: {count} events at the sink, "
                      f"watching {s.get('watching')}, overdue {s.get('overdue')}", flush=True)
            time.sleep(0.25)
        marks["all_delivered"] = sampler.sample()
        if spy is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(args.pyspy + 30)
        run["timed_out"] = count < args.jobs
        time.sleep(3.0)  # late duplicates, if any, would arrive now
        marks["end"] = sampler.sample()
        sampler.stop.set()
        sampler.join()
        fake_stats = client.get(f"{fake_url}/control/stats").json()
        sink_stats = client.get(f"{sink_url}/stats").json()
        run["hookyard_log_lines"] = _log_summary(workdir / "hookyard.log")
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
            run["job_states"] = dict(c.execute(
                "SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
            run["events_stored"] = dict(c.execute(
                "SELECT type, COUNT(*) FROM events GROUP BY type").fetchall())
    run.update(_analyse(args, limit, plan, origin, fake_stats, sink_stats, sampler.samples,
                        marks))
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir.parent, ignore_errors=True)
    else:
        run["kept"] = str(workdir)
    return run


def _runner() -> Any:
    try:
        import uvloop
        return uvloop.run
    except ImportError:
        return asyncio.run


def _log_summary(log: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                doc = json.loads(line)
                key = f"{doc.get('level')}:{doc.get('event')}"
                counts[key] = counts.get(key, 0) + 1
    return counts


# ---------------------------------------------------------------- analysis


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _dist(values: list[float], digits: int = 2) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(_pct(values, 0.5), digits),
            "p90": round(_pct(values, 0.9), digits), "p95": round(_pct(values, 0.95), digits),
            "p99": round(_pct(values, 0.99), digits), "max": round(max(values), digits),
            "min": round(min(values), digits), "mean": round(statistics.fmean(values), digits)}


def _max_in_window(ts: list[float], w: float) -> tuple[int, float | None]:
    """The most arrivals in any half-open window [t, t + w), and where it starts."""
    best, at, j = 0, None, 0
    for i, t in enumerate(ts):
        j = max(j, i)
        while j < len(ts) and ts[j] < t + w:
            j += 1
        if j - i > best:
            best, at = j - i, t
    return best, at


def _over(ts: list[float], w: float, cap: float) -> int:
    """Arrivals that a strict sliding-window limiter (at most `cap` in the last `w` s,
    counting every arrival) would have refused: arrival i with > cap arrivals in (t-w, t]."""
    n, i = 0, 0
    for j, t in enumerate(ts):
        while ts[i] <= t - w:
            i += 1
        if j - i + 1 > cap:
            n += 1
    return n


def _analyse(args: argparse.Namespace, limit: float, plan: dict[str, float], origin: float,
             fake: dict[str, Any], sink: list[list[Any]], samples: list[dict[str, Any]],
             marks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    arrivals: list[float] = fake["arrivals"]
    order = sorted(range(len(arrivals)), key=arrivals.__getitem__)
    ts = [arrivals[i] for i in order]
    codes = [fake["codes"][i] for i in order]
    n = len(ts)
    reg_start, reg_end = marks["reg_start"]["t"], marks["reg_end"]["t"]
    done_t = marks["all_delivered"]["t"]
    # ---- polls/s
    first, last = ts[0], ts[-1]
    seconds = int(last - first)
    bins = [0] * max(1, seconds)
    for t in ts:
        k = int(t - first)
        if k < seconds:
            bins[k] += 1
    sat_bins, unsat_bins, reg_bins = [], [], []
    overdue_series = [(s["t"], s.get("overdue")) for s in samples if s.get("overdue") is not None]
    for k, count in enumerate(bins):
        b0, b1 = first + k, first + k + 1
        inside = [o for t, o in overdue_series if b0 - 0.25 <= t <= b1 + 0.25]
        if b1 <= reg_end:
            reg_bins.append(count)
        elif inside and min(inside) > POLLER_CONCURRENCY:
            sat_bins.append(count)
        else:
            unsat_bins.append(count)
    window_s = last - first
    polls_by_phase = {
        "registration": sum(1 for t in ts if reg_start <= t < reg_end),
        "after_registration": sum(1 for t in ts if reg_end <= t <= done_t),
    }
    max1, max1_at = _max_in_window(ts, 1.0)
    max01, _ = _max_in_window(ts, 0.1)
    max60, _ = _max_in_window(ts, 60.0) if window_s >= 60 else (None, None)
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    out["polls"] = {
        "total": n,
        "statuses": {str(c): codes.count(c) for c in sorted(set(codes))},
        "window_s": round(window_s, 2),
        "overall_per_s": round(n / window_s, 2) if window_s > 0 else None,
        "by_phase": polls_by_phase,
        "registration_phase_per_s": round(polls_by_phase["registration"]
                                          / max(1e-9, reg_end - max(reg_start, first)), 2),
        "per_second_all": _dist([float(b) for b in bins], 1),
        "saturated_seconds": len(sat_bins),
        "per_second_saturated": _dist([float(b) for b in sat_bins], 1),
        "saturated_mean_per_s": round(statistics.fmean(sat_bins), 2) if sat_bins else None,
        "saturated_mean_pct_of_limit": (round(100 * statistics.fmean(sat_bins) / limit, 2)
                                        if sat_bins else None),
        "per_second_registration": _dist([float(b) for b in reg_bins], 1),
        "per_second_unsaturated": _dist([float(b) for b in unsat_bins], 1),
        "max_in_any_1s_window": max1,
        "max_1s_window_at_s_after_clock": round(max1_at - origin, 2) if max1_at else None,
        "max_in_any_1s_window_pct_of_limit": round(100 * max1 / limit, 2),
        "max_in_any_100ms_window": max01,
        "max_in_any_60s_window": max60,
        "limit_per_60s": round(limit * 60, 1),
        "fixed_1s_bins_max": max(bins),
        "fixed_1s_bins_above_limit": sum(1 for b in bins if b > limit),
        "over_limit_sliding_1s": _over(ts, 1.0, limit),
        "over_limit_counted_by_fake": fake["over_limit"],
        "gap_ms": _dist([g * 1000 for g in gaps], 3),
        "gaps_below_half_interval": sum(1 for g in gaps if g < 0.5 / limit),
        "series": bins,
    }
    # ---- per job: finish → first completed answer → sink
    first_done: dict[int, float] = {}
    done_answers: dict[int, int] = {}
    polls_per_job: dict[int, int] = {}
    for i in order:
        j = fake["jobs"][i]
        polls_per_job[j] = polls_per_job.get(j, 0) + 1
        if fake["completed"][i]:
            done_answers[j] = done_answers.get(j, 0) + 1
            first_done.setdefault(j, fake["arrivals"][i])
    index = {job_id: k for k, job_id in enumerate(plan)}
    offsets = list(plan.values())
    at_sink: dict[int, float] = {}
    by_webhook: dict[str, int] = {}
    per_job_events: dict[int, int] = {}
    types: dict[str, int] = {}
    for webhook_id, job_id, kind, t in sink:
        by_webhook[webhook_id] = by_webhook.get(webhook_id, 0) + 1
        types[str(kind)] = types.get(str(kind), 0) + 1
        k = index.get(job_id, -1)
        per_job_events[k] = per_job_events.get(k, 0) + 1
        if k >= 0 and (k not in at_sink or t < at_sink[k]):
            at_sink[k] = t
    total, poll_part, deliver_part = [], [], []
    for k, t in at_sink.items():
        fin = origin + offsets[k]
        total.append(t - fin)
        if k in first_done:
            poll_part.append(first_done[k] - fin)
            deliver_part.append(t - first_done[k])
    out["events"] = {
        "jobs": args.jobs, "delivered_requests": len(sink), "distinct_event_ids": len(by_webhook),
        "distinct_jobs": len(at_sink),
        "duplicate_requests": len(sink) - len(by_webhook),
        "jobs_with_more_than_one_event": sum(1 for k, c in per_job_events.items()
                                             if c > 1 and k >= 0),
        "unknown_job_events": per_job_events.get(-1, 0),
        "types": types,
        "jobs_answered_completed_more_than_once": sum(1 for c in done_answers.values() if c > 1),
        "polls_per_job": _dist([float(c) for c in polls_per_job.values()], 2),
        "last_event_s_after_clock": round(max(at_sink.values()) - origin, 2) if at_sink else None,
    }
    out["delay_s"] = {"finish_to_sink": _dist(total, 3),
                      "finish_to_completed_poll": _dist(poll_part, 3),
                      "completed_poll_to_sink": _dist(deliver_part, 3)}
    # what bounds it: the round-robin period (watched jobs / limit) at each job's finish time
    watching = [(s["t"], s["watching"]) for s in samples if s.get("watching") is not None]
    cycle = []
    for k in at_sink:
        fin = origin + offsets[k]
        near = min(watching, key=lambda x: abs(x[0] - fin)) if watching else None
        if near is not None:
            cycle.append(near[1] / limit)
    out["delay_s"]["watched_over_limit_at_finish"] = _dist(cycle, 2)
    # ---- CPU and memory
    def cpu(name: str, a: str, b: str) -> dict[str, Any]:
        x, y = marks[a], marks[b]
        wall = y["t"] - x["t"]
        used = y.get(f"{name}_cpu", math.nan) - x.get(f"{name}_cpu", math.nan)
        return {"wall_s": round(wall, 2), "cpu_s": round(used, 2),
                "pct_of_one_core": round(100 * used / wall, 1) if wall > 0 else None}

    def system(a: str, b: str) -> dict[str, Any]:
        x, y = marks[a], marks[b]
        tot = y["sys_total"] - x["sys_total"]
        return {"busy_pct_of_machine": round(100 * (y["sys_busy"] - x["sys_busy"]) / tot, 1),
                "steal_pct_of_machine": round(100 * (y["sys_steal"] - x["sys_steal"]) / tot, 1)}

    phases = {"idle": ("idle_start", "reg_start"), "registration": ("reg_start", "reg_end"),
              "polling": ("reg_end", "all_delivered"), "whole": ("reg_start", "all_delivered")}
    out["cpu"] = {name: {phase: cpu(name, *ab) for phase, ab in phases.items()}
                  for name in ("hookyard", "fake", "sink", "runner")}
    out["cpu"]["machine"] = {phase: system(*ab) for phase, ab in phases.items()}
    polled = polls_by_phase["after_registration"]
    hk = out["cpu"]["hookyard"]["polling"]
    out["cpu"]["hookyard_us_per_poll_after_registration"] = (
        round(1e6 * hk["cpu_s"] / polled, 1) if polled else None)
    series_cpu = []
    for a, b in itertools.pairwise(samples):
        if "hookyard_cpu" in a and "hookyard_cpu" in b and b["t"] > a["t"]:
            series_cpu.append(100 * (b["hookyard_cpu"] - a["hookyard_cpu"]) / (b["t"] - a["t"]))
    out["cpu"]["hookyard_pct_per_0_5s_sample"] = _dist(series_cpu, 1)
    rss = [s["hookyard_rss"] for s in samples if "hookyard_rss" in s]
    mib = 1024 * 1024
    out["rss_mib"] = {"start": round(marks["idle_start"]["hookyard_rss"] / mib, 1),
                      "after_registration": round(marks["reg_end"]["hookyard_rss"] / mib, 1),
                      "peak": round(max(rss) / mib, 1) if rss else None,
                      "end": round(marks["end"]["hookyard_rss"] / mib, 1)}
    out["samples"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}
                      for s in samples]
    for s in out["samples"]:
        s["t"] = round(s["t"] - origin, 3)
    return out


def _print_run(r: dict[str, Any]) -> None:
    p, e, d, c = r["polls"], r["events"], r["delay_s"], r["cpu"]
    reg = r["registration"]
    print(f"registration: {reg['jobs']} jobs in {reg['seconds']} s ({reg['per_s']}/s), "
          f"statuses {reg['statuses']}, errors {len(reg['errors'])}")
    print(f"polls: {p['total']} ({p['statuses']}) over {p['window_s']} s = "
          f"{p['overall_per_s']}/s; saturated seconds {p['saturated_seconds']}: mean "
          f"{p['saturated_mean_per_s']}/s = {p['saturated_mean_pct_of_limit']} % of limit, "
          f"per-second {p['per_second_saturated']}")
    print(f"  during registration {p['registration_phase_per_s']}/s; max in any 1 s window "
          f"{p['max_in_any_1s_window']} ({p['max_in_any_1s_window_pct_of_limit']} % of limit), "
          f"fixed 1 s bins max {p['fixed_1s_bins_max']}, over-limit arrivals (sliding 1 s) "
          f"{p['over_limit_sliding_1s']}, max in 100 ms {p['max_in_any_100ms_window']}, "
          f"max in 60 s {p['max_in_any_60s_window']} (limit {p['limit_per_60s']})")
    print(f"events: {e['delivered_requests']} requests, {e['distinct_jobs']} jobs of "
          f"{e['jobs']}, duplicates {e['duplicate_requests']}, types {e['types']}, "
          f"polls per job {e['polls_per_job']['mean']} (max {e['polls_per_job']['max']})")
    for k in ("finish_to_sink", "finish_to_completed_poll", "completed_poll_to_sink",
              "watched_over_limit_at_finish"):
        x = d[k]
        print(f"  {k:30s} p50 {x.get('p50')}  p90 {x.get('p90')}  p99 {x.get('p99')}  "
              f"max {x.get('max')}")
    for phase in ("idle", "registration", "polling", "whole"):
        h = c["hookyard"][phase]
        m = c["machine"][phase]
        print(f"  cpu {phase:12s} hookyard {h['pct_of_one_core']} % of a core "
              f"({h['cpu_s']} s / {h['wall_s']} s); fake {c['fake'][phase]['pct_of_one_core']} %,"
              f" sink {c['sink'][phase]['pct_of_one_core']} %, runner "
              f"{c['runner'][phase]['pct_of_one_core']} %; machine busy "
              f"{m['busy_pct_of_machine']} %, steal {m['steal_pct_of_machine']} %")
    print(f"  hookyard CPU per poll after registration: "
          f"{c['hookyard_us_per_poll_after_registration']} us; RSS MiB {r['rss_mib']}")


def _summary(runs: list[dict[str, Any]], limit: float) -> dict[str, Any]:
    s: dict[str, Any] = {"limit_per_s": limit}
    s["saturated_mean_pct_of_limit"] = [r["polls"]["saturated_mean_pct_of_limit"] for r in runs]
    s["max_in_any_1s_window"] = [r["polls"]["max_in_any_1s_window"] for r in runs]
    s["delivered_jobs"] = [r["events"]["distinct_jobs"] for r in runs]
    s["duplicates"] = [r["events"]["duplicate_requests"] for r in runs]
    within = all(p is not None and abs(p - 100) <= 100 * TARGET_WITHIN
                 for p in s["saturated_mean_pct_of_limit"])
    s["targets"] = {
        "rate_within_5pct_of_limit": within,
        "never_above_limit_1s_sliding": all(m <= limit for m in s["max_in_any_1s_window"]),
        "all_events_delivered": all(r["events"]["distinct_jobs"] == r["events"]["jobs"]
                                    for r in runs),
        "zero_duplicates": all(r["events"]["duplicate_requests"] == 0
                               and r["events"]["jobs_with_more_than_one_event"] == 0
                               for r in runs),
    }
    s["targets"]["all_met"] = all(s["targets"].values())
    return s


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import platform

    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu,
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "packages": {n: ingest._version(n) for n in
                         ("uvicorn", "starlette", "uvloop", "httptools", "httpx", "httpcore",
                          "aiosqlite", "structlog", "psutil")},
            "sqlite": sqlite3.sqlite_version,
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


if __name__ == "__main__":
    raise SystemExit(main())
