"""Instructions per accepted webhook in the web process, counted by valgrind (callgrind).

    .venv/bin/python bench/ingest/instructions.py [--small 500] [--large 2500] [--no-log]

This VM's speed drifts by 10-20 % within minutes and by 2x between hours, so a change of a few
percent in the intake's own work cannot be seen in req/s or CPU seconds. Counted instructions do
not drift: the same code on the same input gives the same count to within a few hundred per
webhook. (They are not time: cache misses and system calls are not in them. Confirm a gain
end to end, bench/ingest/run.py, before believing it.)

What runs: the app exactly as `hookyard serve` builds it (receiver.app.create_app, JSON logs
batched per loop turn to /dev/null, serving.tune_gc), in process, fed pre-signed unique
Rendergrid webhooks 64 at a time through its ASGI interface (bench/ingest/cpu.py's harness, no
HTTP server); the store answers every write at once, so what is counted is the web process's
part of a webhook: headers, signature, JSON, the provider's parse, the event, routing, the
hand-off to ingest, the log line, metrics, the answer. Two runs under `valgrind
--tool=callgrind` (in parallel), with --small and --large webhooks after the same start-up; the
difference divided by the difference in webhooks is the count per webhook, start-up and imports
cancelling out. Needs valgrind (apt-get install valgrind); takes about 90 s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

WARM_UP = 200


def _count(webhooks: int, signed: int, no_log: bool, workdir: Path) -> int:
    """Run this script's workload with `webhooks` webhooks under callgrind; its instructions."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir}/cg.{webhooks}",
           sys.executable, __file__, "--workload", str(webhooks), "--large", str(signed),
           *(["--no-log"] if no_log else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=ROOT)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return int(found.group(1))


def _workload(webhooks: int, signed: int, no_log: bool) -> None:
    import uvloop

    from bench.ingest import cpu
    from receiver import logs, serving, settings
    from receiver.app import create_app
    from receiver.store import Stored
    from receiver.store.sqlite import SqliteStore

    tmp = Path(tempfile.mkdtemp(prefix="hookyard-instructions-"))
    path = tmp / "hookyard.toml"
    path.write_text(cpu.CONFIG.format(db=tmp / "hookyard.db", secret=cpu.SECRET))
    config = settings.load(str(path))
    devnull = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)
    logs.configure(config.secret_values(), cache=True, stream=devnull, batched=True,
                   level=logging.WARNING if no_log else logging.INFO)

    async def write_events(self: Any, items: Any) -> list[Stored]:
        return [Stored(i.event.id, False, len(i.sinks)) for i in items]

    SqliteStore.write_events = write_events  # type: ignore[method-assign]
    # As many signed in both runs (signing is not the intake's work), the first `webhooks` sent.
    requests = cpu._requests(config, signed)[:webhooks]

    async def main() -> None:
        app = create_app(config)
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await events.put({"type": "lifespan.startup"})
        life = asyncio.create_task(app({"type": "lifespan"}, events.get, answers.put))
        assert (await answers.get())["type"] == "lifespan.startup.complete"
        serving.tune_gc()
        await cpu._round(app, cpu._requests(config, WARM_UP), 64)
        row = await cpu._round(app, requests, 64)
        assert row["non_200"] == 0, row
        await events.put({"type": "lifespan.shutdown"})
        await answers.get()
        await life

    uvloop.run(main())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", type=int, default=500)
    p.add_argument("--large", type=int, default=2500)
    p.add_argument("--no-log", action="store_true", help="the webhook.accepted line not written")
    p.add_argument("--workload", type=int, help=argparse.SUPPRESS)  # one run, under valgrind
    args = p.parse_args()
    if args.workload is not None:
        _workload(args.workload, args.large, args.no_log)
        return 0
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(2) as pool:
        small, large = pool.map(lambda n: _count(n, args.large, args.no_log, Path(tmp)),
                                (args.small, args.large))
    per = (large - small) / (args.large - args.small)
    print(f"instructions per accepted webhook: {per:,.0f} "
          f"({args.small} and {args.large} webhooks: {small:,} and {large:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
