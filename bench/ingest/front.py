"""What-if for issue 11's next design: how fast could a web process be that does HTTP only?

The ingest run of record shows the web process's event loop as the limit (94 % of a core),
with ~63 % of its interpreter time in hookyard's endpoint: verifying, parsing, logging and
preparing rows. The design this measures moves all of that to a second process (as the ingest
writer already moved the SQLite commit) and leaves the web process: read the body, hand
(source, headers, body) to a batch hand-off (receiver.core.batching.GroupCommit, pickled as a
real socket exchange would be), answer what comes back.

`app` below is that web process, with the second process replaced by an instant answer, so
the number is an upper bound for the front alone. It is served by uvicorn with the settings
`hookyard serve` uses, alternating with bench/ingest/bare_app.py, both fed the same pre-signed
Rendergrid webhooks by wrk (bench/ingest/run.py's helpers):

    .venv/bin/python bench/ingest/front.py [--rounds 3] [--duration 8]

If the front alone cannot reach about twice bare's cost per request, the split cannot reach
half of bare either, whatever the second process does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.ingest import run  # noqa: E402
from receiver.core.batching import GroupCommit  # noqa: E402


async def _hand_off(items: list[tuple[str, dict[str, str], bytes]]) -> list[bytes]:
    pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)  # what a socket exchange would send
    return [b'{"event_id":"evt_01JDFRONT0000000000000000","duplicate":false}'] * len(items)


_commit: GroupCommit[tuple[str, dict[str, str], bytes], bytes] = GroupCommit(
    _hand_off, name="front"
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    answer = await _commit.submit((scope["path"].rsplit("/", 1)[-1], headers, b"".join(chunks)))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": answer})


@contextlib.contextmanager
def _uvicorn(target: str, workdir: Path) -> Iterator[str]:
    port = run._free_port()
    log = workdir / f"{target.split(':')[0].rsplit('.', 1)[-1]}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port",
             str(port), *run.UVICORN_FLAGS], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env=env)
    try:
        run._wait(proc, f"http://127.0.0.1:{port}/hooks/x", log, target)
        yield f"http://127.0.0.1:{port}/hooks/{run.SOURCE}"
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        if proc.poll() is None:
            proc.kill()


def what_if_setup(
    name: str, description: str, duration: float
) -> tuple[argparse.Namespace, str, argparse.Namespace, Path] | None:
    """The command line of a what-if runner (--rounds, --duration), wrk (None when it is not
    installed, said on stderr), wrk's settings as run.py's, and a fresh work directory."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=duration)
    args = p.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print(f"{name}: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return None
    wrk_args = argparse.Namespace(threads=1, connections=64, tail=3.0, timeout=10.0)
    return args, wrk, wrk_args, Path(tempfile.mkdtemp(prefix=f"hookyard-{name[:-3]}-"))


def main() -> int:
    setup = what_if_setup("front.py", __doc__.splitlines()[0], 8.0)
    if setup is None:
        return 2
    args, wrk, wrk_args, workdir = setup
    config = workdir / "hookyard.toml"
    config.write_text(run.CONFIG.format(database=f"sqlite:///{workdir / 'unused.db'}",
                                        secret=run.SECRET, tolerance=run.TOLERANCE_S,
                                        jsonl=workdir / "unused.jsonl"))
    verifier = run._verifier(config)
    rates: dict[str, list[float]] = {"front": [], "bare": []}
    with _uvicorn("bench.ingest.front:app", workdir) as front, \
            _uvicorn("bench.ingest.bare_app:app", workdir) as bare:
        targets = {"front": front, "bare": bare}
        for name, url in targets.items():
            run._write_batch(workdir / f"{name}.http", verifier, 100_000, url)
        for number in range(1, args.rounds + 1):
            for name, url in targets.items():
                batch = workdir / f"{name}.http"
                data = run._run_wrk(wrk, wrk_args, url, batch, args.duration, "wrap")
                row = run._row(name, data, args.duration)
                rates[name].append(row["rps"])
                print(f"round {number} {name:5} {row['rps']:9.1f} req/s  "
                      f"p99 {row['p99_ms']:.2f} ms", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    ratios = [f / b for f, b in zip(rates["front"], rates["bare"], strict=True)]
    print(json.dumps({"front_rps": rates["front"], "bare_rps": rates["bare"],
                      "ratio_median": statistics.median(ratios)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
