"""Instructions per POST of HTTP clients: a count that does not drift with the machine.

    .venv/bin/python bench/client/instructions.py [--clients aiohttp,pyreqwest,hookyard]

CPU time on this VM moves by 2x between hours (bench/RESULTS.md), so a change to the delivery
client is judged by instructions as well: each client of bench/client/cpu.py runs in its own
process under valgrind's callgrind, once with SMALL and once with LARGE POSTs (4 in flight, the
default sink concurrency), against bench/delivery/sink_app.py (not under valgrind); the
difference divided by LARGE - SMALL is the instructions of one POST, start-up cancelled out.
Every thread of the process is counted (pyreqwest's own thread included), so it is the whole
process's work, not the event loop's share. Needs valgrind. Takes ~2 minutes per client.
Prints one line per client and writes bench/client/results-instructions.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from bench.client import cpu  # noqa: E402

SMALL, LARGE = 300, 1300
_COLLECTED = re.compile(r"Collected : (\d+)")


def count(client: str, url: str, requests: int, workdir: Path) -> int:
    """Instructions of a whole `cpu.py --once` run (callgrind's total over every thread)."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir / 'cg.out'}",
         sys.executable, str(HERE / "cpu.py"), "--once", url, "--clients", client,
         "--requests", str(requests), "--concurrency", "4"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    found = _COLLECTED.search(out.stderr)
    if found is None:
        raise SystemExit(f"no instruction count from callgrind:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", default="aiohttp,pyreqwest,hookyard")
    args = p.parse_args()
    results = {}
    with cpu.sink_server() as url, tempfile.TemporaryDirectory() as tmp:
        for client in args.clients.split(","):
            small = count(client, url, SMALL, Path(tmp))
            large = count(client, url, LARGE, Path(tmp))
            results[client] = round((large - small) / (LARGE - SMALL))
            print(f"{client:<12} {results[client]:>10,} instructions per POST", flush=True)
    (HERE / "results-instructions.json").write_text(json.dumps(
        {"small": SMALL, "large": LARGE, "concurrency": 4, "instructions_per_post": results},
        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
