"""What-if launcher (not the normal way to run hookyard): `hookyard serve` with one experiment
applied before it starts, chosen by environment variables, to measure a design before
building it. receiver/ is unchanged. Used by `bench/ingest/run.py --module bench.ingest.whatif`
(and bench/ingest/cpu.py applies the same variables in process).

  WHATIF_INLINE=1       every SQLite store call runs on the event-loop thread (no hop to the
                        aiosqlite thread, so no GIL hand-offs between the two)
  WHATIF_SWITCH=0.0005  sys.setswitchinterval (CPython's default is 0.005 s)
  WHATIF_TRACE=PATH     each write_events call's batch size, start and duration, and how long its
                        whole transaction (lock, BEGIN, writes, COMMIT) took in the database
                        thread, appended to PATH as
                        "size start_s total_s in_thread_s" lines
  WHATIF_BG_CHECKPOINT=0.1
                        no automatic checkpoint inside the writer's commits; a thread of its
                        own runs PASSIVE checkpoints on its own connection this often (s)
  WHATIF_THREAD_WRITER=1
                        event batches are committed on the store's own thread, not by the
                        writer process `hookyard serve` starts (how it was before)
  WHATIF_DROP_INDEXES=events_job,events_type
                        these indexes are dropped once the SQLite store has opened (fewer
                        index pages written per event; queries that used them get slower)
"""

from __future__ import annotations

import os
import sys
from typing import Any


def apply() -> list[str]:
    """Apply the experiments the environment asks for; return their names."""
    applied = []
    if os.environ.get("WHATIF_INLINE"):
        import aiosqlite

        from receiver.store.sqlite import base

        connect = aiosqlite.connect

        def connect_any_thread(*args: Any, **kwargs: Any) -> Any:
            return connect(*args, check_same_thread=False, **kwargs)

        async def run_inline(db: Any, fn: Any, *args: Any) -> Any:
            return fn(db._conn, *args)

        base.aiosqlite.connect = connect_any_thread  # type: ignore[attr-defined]
        base.run = run_inline  # type: ignore[assignment]
        applied.append("inline")
    if os.environ.get("WHATIF_THREAD_WRITER"):
        import receiver.store

        open_store = receiver.store.open_store

        def open_store_threaded(database: str, **_: Any) -> Any:
            return open_store(database)

        receiver.store.open_store = open_store_threaded  # type: ignore[assignment]
        applied.append("thread writer")
    if os.environ.get("WHATIF_DROP_INDEXES"):
        from receiver.store.sqlite import SqliteStore

        names = os.environ["WHATIF_DROP_INDEXES"].split(",")
        opened = SqliteStore.open

        def drop(conn: Any) -> None:
            for name in names:
                conn.execute(f"DROP INDEX IF EXISTS {name}")

        async def open_then_drop(self: Any) -> None:
            await opened(self)
            await self._write(drop)

        SqliteStore.open = open_then_drop  # type: ignore[method-assign]
        applied.append(f"drop {','.join(names)}")
    if os.environ.get("WHATIF_TRACE"):
        import time

        from receiver.store.sqlite import SqliteStore, base, events

        trace = open(os.environ["WHATIF_TRACE"], "a", buffering=1)  # noqa: SIM115
        exclusive = base.exclusive
        spent: list[float] = []

        def timed_exclusive(conn: Any, *args: Any) -> Any:
            started = time.perf_counter()
            try:
                return exclusive(conn, *args)
            finally:
                if args[2] is events.write_batch:
                    spent.append(time.perf_counter() - started)

        write_events = SqliteStore.write_events

        async def traced(self: Any, items: Any) -> Any:
            started = time.perf_counter()
            result = await write_events(self, items)
            took = time.perf_counter() - started
            in_thread = spent.pop(0) if spent else 0.0
            trace.write(f"{len(items)} {started:.6f} {took:.6f} {in_thread:.6f}\n")
            return result

        base.exclusive = timed_exclusive  # type: ignore[assignment]
        SqliteStore.write_events = traced  # type: ignore[method-assign]
        applied.append("trace")
    if os.environ.get("WHATIF_BG_CHECKPOINT"):
        import sqlite3
        import threading
        import time

        from receiver.store.sqlite import SqliteStore

        every = float(os.environ["WHATIF_BG_CHECKPOINT"])
        opened_ = SqliteStore.open

        def checkpoints(path: str) -> None:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            while True:
                time.sleep(every)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

        async def open_then_checkpoint(self: Any) -> None:
            await opened_(self)
            assert self._writer is not None
            await self._writer.execute("PRAGMA wal_autocheckpoint = 0")
            threading.Thread(target=checkpoints, args=(self.path,), daemon=True).start()

        SqliteStore.open = open_then_checkpoint  # type: ignore[method-assign]
        applied.append(f"checkpoints every {every} s off the commit path")
    if os.environ.get("WHATIF_SWITCH"):
        sys.setswitchinterval(float(os.environ["WHATIF_SWITCH"]))
        applied.append(f"switch={os.environ['WHATIF_SWITCH']}")
    return applied


if __name__ == "__main__":
    apply()
    from receiver.cli import main

    raise SystemExit(main())
