"""Delivery alone: CPU per delivery of a `hookyard worker` draining a backlog (issue 11).

    .venv/bin/python bench/delivery/drain.py [--events 4000] [--rounds 3] [--root OTHER_CHECKOUT]

The steady stream (bench/steady) measures delivery and intake together, on two cores shared
with the load generator and the sink, so its lag moves with everything else on the machine.
This isolates the delivery path: `hookyard serve --no-worker` takes EVENTS unique signed
webhooks (bench/delivery/loadgen.py) with three `http` sinks at their default settings routed
to every event (bench/steady's config: 3 x EVENTS pending rows), and stops. Then one
`hookyard worker` starts on that file and sends them to bench/delivery/sink_app.py. From the
first arrival at the sink to the last, the worker's CPU (user + system, /proc) is divided by the
deliveries made meanwhile: everything a delivery costs the process that sends it (claim, the
sink's send with its signing and client, the outcome's write, metrics, the log line), start-up
excluded; and the event loop thread's share of it (what limits a `serve` whose loop also takes
webhooks). Also reported: deliveries per second over the same span.

With --root the hookyard processes run from another checkout (e.g. a `git worktree` of an
older commit), so two versions can be measured in alternating rounds: --root A --root B.
Prints one line per round and writes bench/delivery/results-drain.json.
"""

from __future__ import annotations

import argparse
import json
import os
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
from bench.steady import run as steady  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int, thread: int | None = None) -> float:
    """user + system seconds of one process (its threads included), or of one of its threads
    (the main thread's id is the process id: the event loop's thread)."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _env(root: Path) -> dict[str, str]:
    env = delivery._env()
    env["PYTHONPATH"] = os.pathsep.join([str(root), env["PYTHONPATH"]])
    return env


def fill(root: Path, workdir: Path, cfg: Path, events: int, rate: float) -> int:
    """EVENTS webhooks into the store through `serve --no-worker`; the number answered 200."""
    port = ingest._free_port()
    argv = [sys.executable, "-m", "receiver.cli", "serve", "--no-worker", "--config", str(cfg),
            "--host", "127.0.0.1", "--port", str(port)]
    with (workdir / "serve.log").open("ab") as log:
        proc = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                env=_env(root))
    try:
        ingest._wait(proc, f"http://127.0.0.1:{port}/readyz", workdir / "serve.log", "serve")
        out = workdir / "load.json"
        subprocess.run([sys.executable, str(HERE / "loadgen.py"),
                        f"http://127.0.0.1:{port}/hooks/rendergrid", str(cfg), str(rate),
                        str(events / rate), str(out), "--connections", "64"],
                       check=True, env=_env(root))
        return sum(1 for r in json.loads(out.read_text())["results"] if r[1] == 200)
    finally:
        proc.terminate()
        proc.wait(30)


def drain(root: Path, workdir: Path, cfg: Path, sink: str, expected: int) -> dict[str, Any]:
    before = delivery._sink_count(sink)
    with (workdir / "worker.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "receiver.cli", "worker", "--config", str(cfg)],
            cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=_env(root))
    try:
        deadline = time.time() + 300
        while (first := delivery._sink_count(sink) - before) == 0:
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit(f"worker sent nothing; see {workdir / 'worker.log'}")
            time.sleep(0.005)
        t0, cpu0, loop0 = time.perf_counter(), _cpu_s(proc.pid), _cpu_s(proc.pid, proc.pid)
        while (done := delivery._sink_count(sink) - before) < expected:
            if time.time() > deadline:
                raise SystemExit(f"{done} of {expected} delivered in time; see {workdir}")
            time.sleep(0.02)
        t1, cpu1, loop1 = time.perf_counter(), _cpu_s(proc.pid), _cpu_s(proc.pid, proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    sent = done - first
    return {"deliveries": sent, "seconds": round(t1 - t0, 3),
            "deliveries_per_s": round(sent / (t1 - t0), 1),
            "cpu_us_per_delivery": round((cpu1 - cpu0) / sent * 1e6, 1),
            "loop_thread_us_per_delivery": round((loop1 - loop0) / sent * 1e6, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fill-rate", type=float, default=800.0)
    p.add_argument("--root", action="append", type=Path,
                   help="a checkout to run hookyard from (repeat to alternate; default: this)")
    args = p.parse_args()
    roots = args.root or [ROOT]
    base = Path(tempfile.mkdtemp(prefix="hookyard-drain-"))
    sink_cm, sink = delivery._sink_server(base)
    rows = []
    with sink_cm:
        for n in range(args.rounds):
            for root in roots:
                workdir = Path(tempfile.mkdtemp(prefix="round-", dir=base))
                cfg = steady.config(workdir, sink, None)
                answered = fill(root, workdir, cfg, args.events, args.fill_rate)
                row = {"round": n + 1, "root": str(root), "events": answered,
                       **drain(root, workdir, cfg, sink, 3 * answered)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    (HERE / "results-drain.json").write_text(json.dumps(
        {"machine": ingest._machine("wrk", base), "code": ingest._code_version(), "runs": rows},
        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
