"""The due-loop: claim what is due, start it, sleep until the next thing is due or a wake-up.

The one scheduler shape behind the delivery runners (one per sink) and the poller. The owner
says how to take work (`claim`, which starts what it took and returns how many) and how long
there is nothing to do (`idle_wait`); the loop owns the waiting. Sleeps are measured on the
monotonic clock, so a wall-clock step neither stalls nor hurries a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

# Whatever a loop was told, it looks again this often: work added by another process (the CLI,
# another worker) is picked up within this time even when no wake-up reaches us.
IDLE_RECHECK_S = 5.0
FIRST_PAUSE_S = 0.5  # after a failed round (the store is down): back off, doubling
MAX_PAUSE_S = 30.0

log = structlog.get_logger("hookyard.dueloop")


class DueLoop:
    """Runs `claim()` until it takes nothing, then sleeps `idle_wait()` seconds (None: the idle
    re-check), capped at `recheck_s`, or until `wake()` (claim) or `nudge()` (look, then
    claim if due)."""

    def __init__(
        self,
        claim: Callable[[], Awaitable[int]],
        idle_wait: Callable[[], Awaitable[float | None]],
        *,
        recheck_s: float = IDLE_RECHECK_S,
        name: str = "due-loop",
    ) -> None:
        self.name = name
        self.claim = claim
        self.idle_wait = idle_wait
        self.recheck_s = recheck_s
        self._wakeup = asyncio.Event()
        self._nudged = False  # the last wake-up was only a nudge

    def wake(self) -> None:
        """Claim now: work was added for this loop."""
        self._nudged = False
        self._wakeup.set()

    def nudge(self) -> None:
        """Something may have changed in the store (another process's commit): ask
        `idle_wait()` again (a read) and claim only if it says something is due now. An idle
        loop that is nudged on every commit of a busy store would otherwise take a claim (a
        write transaction, in the ingest writer's way) for nothing each time."""
        if not self._wakeup.is_set():
            self._nudged = True
        self._wakeup.set()

    async def run(self) -> None:
        pause = FIRST_PAUSE_S
        while True:
            nudged, self._nudged = self._nudged, False
            self._wakeup.clear()
            try:
                if nudged:
                    wait = await self.idle_wait()
                    if wait is None or wait > 0:
                        await self.sleep(wait)
                        continue
                if not await self.claim():
                    await self.sleep(await self.idle_wait())
                pause = FIRST_PAUSE_S
            except Exception as exc:  # a store outage (or a bug) must not end the loop for good
                log.error(f"{self.name}.failed", error=repr(exc)[:300], retry_in_s=pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE_S)

    async def sleep(self, seconds: float | None) -> None:
        """Wait `seconds` (at most the re-check interval) or until woken."""
        timeout = self.recheck_s if seconds is None else min(max(0.0, seconds), self.recheck_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
