"""CPU per accepted webhook, in process: where the intake's time goes, without HTTP or wrk.

Builds the app exactly as `hookyard serve` does (receiver.app.create_app on a temp SQLite file,
logs configured as serve configures them, written to /dev/null), runs its lifespan, then calls
the ASGI app directly with pre-signed unique Rendergrid webhooks, C at a time, and reports per
request: CPU of the whole process (all threads, getrusage), CPU of the event-loop thread alone
(thread_time), so the rest is the store's writer thread, and the wall time. Parts can be
switched off to see what each costs, and the what-if experiments of bench/ingest/whatif.py
applied (its WHATIF_* environment variables):

  --no-log      the `webhook.accepted` line is not written (structlog level above INFO)
  --null-store  write_events answers at once without touching the database

Usage: .venv/bin/python bench/ingest/cpu.py [--requests 20000] [--concurrency 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.ingest import whatif  # noqa: E402
from receiver import logs, settings  # noqa: E402
from receiver.app import create_app  # noqa: E402
from receiver.core import signing  # noqa: E402
from receiver.store import Stored  # noqa: E402

SECRET = "bench-rendergrid-secret-0123456789"
CONFIG = """\
[server]
database = "sqlite:///{db}"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["{secret}"]
tolerance_s = 3600
"""


def _requests(config: settings.Settings, count: int) -> list[tuple[dict[str, Any], bytes]]:
    src = config.sources["rendergrid"]
    verifier = signing.build_verifier(src.signature, src.secrets, src.tolerance_s, where="bench")
    out = []
    now = time.time()
    for _ in range(count):
        creation = str(uuid.uuid4())
        body = json.dumps({"event": "creation.completed", "id": creation, "status": "completed",
                           "result_urls": [f"https://cdn.rendergrid.io/i/{creation}_0.jpg"],
                           "cost": 0.1}, separators=(",", ":")).encode()
        headers = {"host": "127.0.0.1:8080", "content-type": "application/json",
                   **{k.lower(): v for k, v in verifier.sign(body, now=now).items()},
                   "x-webhook-event": "creation.completed",
                   "x-webhook-delivery-id": str(uuid.uuid4()),
                   "content-length": str(len(body))}
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/hooks/rendergrid",
                 "raw_path": b"/hooks/rendergrid", "query_string": b"", "root_path": "",
                 "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
                 "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8080)}
        out.append((scope, body))
    return out


async def _call(app: Any, scope: dict[str, Any], body: bytes) -> int:
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _round(app: Any, requests: list[tuple[dict[str, Any], bytes]], concurrency: int
                 ) -> dict[str, float]:
    queue = iter(requests)
    statuses: list[int] = []

    async def client() -> None:
        for scope, body in queue:
            statuses.append(await _call(app, scope, body))

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    thread0, wall0 = time.thread_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall, thread = time.perf_counter() - wall0, time.thread_time() - thread0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    total = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    n = len(requests)
    bad = sum(1 for s in statuses if s != 200)
    return {"us_cpu": total / n * 1e6, "us_loop": thread / n * 1e6,
            "us_other_threads": (total - thread) / n * 1e6, "req_per_s": n / wall, "non_200": bad}


async def _main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="hookyard-cpu-"))
    path = tmp / "hookyard.toml"
    path.write_text(CONFIG.format(db=tmp / "hookyard.db", secret=SECRET))
    config = settings.load(str(path))
    devnull = open(os.devnull, "w")  # noqa: SIM115, ASYNC230 (before any request)
    logs.configure(config.secret_values(), cache=True, stream=devnull,
                   level=logging.WARNING if args.no_log else logging.INFO)
    if args.null_store:
        from receiver.store.sqlite import SqliteStore

        async def write_events(self: Any, items: Any) -> list[Stored]:
            return [Stored(i.event.id, False, len(i.sinks)) for i in items]
        SqliteStore.write_events = write_events  # type: ignore[method-assign]
    applied = whatif.apply()
    if applied:
        print("what-if:", ", ".join(applied))
    app = create_app(config)
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await events.put({"type": "lifespan.startup"})
    answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    life = asyncio.create_task(app({"type": "lifespan"}, events.get, answers.put))
    started = await answers.get()
    assert started["type"] == "lifespan.startup.complete", started
    await _round(app, _requests(config, 2000), args.concurrency)  # warm-up
    for r in range(args.rounds):
        row = await _round(app, _requests(config, args.requests), args.concurrency)
        print(f"round {r + 1}: " + "  ".join(f"{k} {v:,.1f}" for k, v in row.items()),
              flush=True)
    await events.put({"type": "lifespan.shutdown"})
    await answers.get()
    await life


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-log", action="store_true")
    p.add_argument("--null-store", action="store_true")
    args = p.parse_args()
    try:
        import uvloop
        uvloop.run(_main(args))
    except ImportError:
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
