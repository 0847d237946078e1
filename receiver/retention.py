"""Retention: events older than `[retention] max_age` leave the store, in small batches.

An event goes, with its deliveries, attempts and mirror records, once it is older than
`max_age` AND none of its deliveries is pending (dead deliveries go with it: they were
replayable until then). Watched jobs that ended go after the same age. Without this the log
grows until the disk is full, and then every webhook answers 503.

The pruner runs in the worker role as a due-loop (receiver.core.dueloop): a pass every
`interval_s`. Each batch is one short transaction (the store picks the batch on a reader and
holds the writer only for the deletes); between batches it pauses nine times as long as the
batch took, so ingest commits interleave and their latency barely moves (bench/retention).
Every few batches, freed pages go back to the OS (SQLite: incremental vacuum).
`hookyard prune` runs one pass by hand through the same `prune_pass`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from receiver.core.dueloop import DueLoop
from receiver.metrics import Metrics
from receiver.store import Pruned, Store

log = structlog.get_logger("hookyard.retention")

# Events per transaction. Measured on 1M old events (bench/retention): a batch of 100 holds
# the SQLite writer ~2.4 ms, 500 ~8.4 ms; every webhook that commits meanwhile waits that long.
BATCH = 100
PAUSE_FACTOR = 9.0  # pause 9x as long as a batch took: the store is the pruner's 10 % at most
MAX_PAUSE_S = 0.5
INTERVAL_S = 600.0  # between passes: ages are days, so a pass every 10 minutes is plenty

Progress = Callable[[Pruned], None]


async def prune_pass(
    store: Store,
    older_than: float,
    *,
    dry_run: bool = False,
    batch: int = BATCH,
    pause: bool = True,
    progress: Progress | None = None,
) -> Pruned:
    """One whole pass: every event received before `older_than` without a pending delivery,
    then ended jobs last changed before then. `progress` hears of each batch. Returns what
    went (or, with `dry_run`, would go)."""
    total, after = Pruned(), None
    while True:
        started = time.monotonic()
        step = await store.prune(older_than, after, batch, dry_run=dry_run)
        if step.events and not dry_run:
            # The pages this batch freed go back at once: each vacuum moves only a few (one
            # over ~3,500 pages, every 10 batches, held the writer ~68 ms and doubled the
            # webhooks' p99 during a pass: bench/RESULTS.md, Retention).
            await store.reclaim_space()
        total = _tell(progress, total, step)
        if step.after is None:
            break
        after = step.after
        if pause:  # leave the writer to webhooks most of the time
            await asyncio.sleep(min(MAX_PAUSE_S, (time.monotonic() - started) * PAUSE_FACTOR))
    while True:
        jobs = await store.prune_jobs(older_than, batch, dry_run=dry_run)
        total = _tell(progress, total, Pruned(jobs=jobs))
        if jobs < batch or dry_run:
            return total


def _tell(progress: Progress | None, total: Pruned, step: Pruned) -> Pruned:
    if progress is not None and any(step.to_json().values()):
        progress(step)
    return total + step


class Pruner:
    """Prunes in the background of a worker process: one pass every `interval_s`."""

    def __init__(
        self,
        store: Store,
        max_age_s: float,
        metrics: Metrics,
        *,
        batch: int = BATCH,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.max_age_s = max_age_s
        self.metrics = metrics
        self.batch = batch
        self.clock = clock
        self.interval_s = interval_s
        self.loop = DueLoop(self._round, self._idle, recheck_s=interval_s, name="retention")
        self.passes = 0  # completed passes (tests wait on it)
        self._next_pass_at = time.monotonic()

    async def run(self) -> None:
        await self.loop.run()

    async def _round(self) -> int:
        """A pass when one is due; 0 so that the due-loop then sleeps until the next. A pass
        that fails (the store is down) is retried by the due-loop with backoff, from the start."""
        if time.monotonic() < self._next_pass_at:
            return 0
        done = await prune_pass(
            self.store, self.clock() - self.max_age_s, batch=self.batch, progress=self._count
        )
        if any(done.to_json().values()):
            log.info("retention.pruned", max_age_s=self.max_age_s, **done.to_json())
        self._next_pass_at = time.monotonic() + self.interval_s
        self.passes += 1
        return 0

    def _count(self, step: Pruned) -> None:
        for table, rows in step.to_json().items():
            if rows:
                self.metrics.pruned.labels(table).inc(rows)

    async def _idle(self) -> float | None:
        return self._next_pass_at - time.monotonic()
