"""The store's write alone: what `write_events` costs per event, without HTTP or the intake.

Opens a SqliteStore on a new temp file and writes batches of pre-built Rendergrid-shaped
events (unique job ids, the headers a webhook carries) one batch at a time, as the ingest
writer does, in ROUNDS rounds of 20,000 events (the file grows round by round). Reports per
event: wall time, CPU of the whole process (getrusage) and of the event-loop thread alone
(the rest is the database thread), and the WAL file's size.

  SQL="DROP INDEX events_job"        statements run once after open (what-if: fewer indexes)
  PRAGMA="PRAGMA synchronous=NORMAL"  pragmas run on the writer connection (what-if)

Usage: .venv/bin/python bench/ingest/store.py [batch size, default 60] [rounds, default 4]
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from receiver.core import events
from receiver.store import NewEvent
from receiver.store.sqlite import SqliteStore


def new_event() -> NewEvent:
    job = str(uuid.uuid4())
    url = f"https://cdn.rendergrid.io/i/{job}_0.jpg"
    payload = {"event": "creation.completed", "id": job, "status": "completed",
               "result_urls": [url], "cost": 0.1}
    event = events.generation_event(source="rendergrid", provider="rendergrid", job_id=job,
                                    status="completed", via="webhook", raw=payload,
                                    outputs=[url], cost=0.1)
    body = (b'{"event":"creation.completed","id":"%s","status":"completed","result_urls":'
            b'["%s"],"cost":0.1}') % (job.encode(), url.encode())
    headers = {"host": "127.0.0.1:8080", "content-type": "application/json",
               "x-rendergrid-signature": "sha256=" + "ab" * 32,
               "x-rendergrid-timestamp": "1796000000", "x-webhook-event": "creation.completed",
               "x-webhook-delivery-id": str(uuid.uuid4()), "content-length": str(len(body)),
               "user-agent": "wrk"}
    return NewEvent(event, body, headers, ())


async def main(batch: int, rounds: int) -> None:
    path = os.path.join(tempfile.mkdtemp(prefix="hookyard-store-"), "hookyard.db")
    store = SqliteStore(path)
    await store.open()

    def tweak(conn: Any) -> None:
        for statement in os.environ.get("SQL", "").split(";"):
            if statement.strip():
                conn.execute(statement)

    await store._write(tweak, durable=False)
    for pragma in filter(None, os.environ.get("PRAGMA", "").split(";")):
        assert store._writer is not None
        await store._writer.execute(pragma)
    for _ in range(rounds):
        batches = [[new_event() for _ in range(batch)] for _ in range(20000 // batch)]
        count = batch * len(batches)
        cpu0, thread0 = resource.getrusage(resource.RUSAGE_SELF), time.thread_time()
        wall0 = time.perf_counter()
        for items in batches:
            await store.write_events(items)
        wall, thread = time.perf_counter() - wall0, time.thread_time() - thread0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        wal = os.path.getsize(path + "-wal") / 1e6  # noqa: ASYNC240 (between rounds)
        print(f"batch {batch}: wall {wall / count * 1e6:.1f} us/event, cpu {cpu / count * 1e6:.1f}"
              f" (loop {thread / count * 1e6:.1f}), {count / wall:,.0f} events/s, WAL {wal:.1f} MB",
              flush=True)
    await store.close()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    asyncio.run(main(*(args + [60, 4][len(args):])))
