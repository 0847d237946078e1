"""Crash benchmark: the in-suite SIGKILL test (tests/test_crash.py), longer.

    .venv/bin/python bench/crash/run.py [--webhooks 12000] [--kills 15] [--concurrency 64]
                                            [--sink-delay 0.02] [--results bench/RESULTS.md]

Streams unique signed Rendergrid webhooks at a real `hookyard serve` (temp SQLite file, one HTTP
sink: a FakeSink on 127.0.0.1 answering 200 after --sink-delay seconds), SIGKILLs the server
--kills times spread evenly over the stream (each time the acknowledged count passes the next
threshold), restarts it on the same port, and re-sends every request that got no answer (as a
provider does). When every webhook has a 200 and every delivery row is delivered, it checks:

* acked: distinct webhooks answered 200;
* lost: acked but not stored, or stored but never received by the sink (must be 0);
* stored twice / wrong id: more than one row per webhook, or a row whose id differs from the
  one the 200 named (must be 0);
* redelivered: sink requests beyond the first per event id (at-least-once: allowed, counted).

Prints the counts (and the kill times); with --results FILE appends a section to FILE.
Exit status 0 only when lost, stored twice, wrong id and pending are all 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.test_crash import Report, crash_campaign  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--webhooks", type=int, default=12000)
    p.add_argument("--kills", type=int, default=15)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--sink-delay", type=float, default=0.02,
                   help="seconds the sink takes to answer (keeps deliveries in flight)")
    p.add_argument("--results", help="append a markdown section to this file")
    p.add_argument("--json", help="write the counts as JSON to this file")
    args = p.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="hookyard-crash-") as tmp:
        report = crash_campaign(Path(tmp), webhooks=args.webhooks, kills=args.kills,
                                concurrency=args.concurrency, sink_delay_s=args.sink_delay,
                                settle_timeout_s=120, log=lambda s: print(s, flush=True))
    print(report.line())
    ok = (report.lost == 0 and report.stored_twice == 0 and report.wrong_id == 0
          and report.pending_at_end == 0 and report.acked == report.webhooks)
    print("RESULT:", "PASS" if ok else "FAIL")
    command = " ".join([".venv/bin/python", "bench/crash/run.py", *sys.argv[1:]])
    if args.json:
        Path(args.json).write_text(json.dumps(
            {**asdict(report), "lost": report.lost, "ok": ok, "started_at": started,
             "command": command, "commit": _commit(), "python": platform.python_version()},
            indent=2) + "\n")
    if args.results:
        with open(args.results, "a") as f:
            f.write(section(report, ok, started, command))
    return 0 if ok else 1


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown"


def section(r: Report, ok: bool, started: str, command: str) -> str:
    return f"""
## Crash: SIGKILL mid-stream ({started}, commit {_commit()})

**{"PASS" if ok else "FAIL"}**: {r.webhooks} unique webhooks, {r.kills} SIGKILLs,
**acked {r.acked}, lost {r.lost}, redelivered {r.redelivered}**; stored {r.stored}, stored
twice {r.stored_twice}, wrong id {r.wrong_id}; {r.requests} requests ({r.unanswered} unanswered
and re-sent, {r.duplicate_answers} answered `duplicate: true`); {r.sink_requests} sink
requests; {r.seconds:.0f} s.

    {command}
"""


if __name__ == "__main__":
    sys.exit(main())
