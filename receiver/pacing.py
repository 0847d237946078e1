"""Pacing: keep a stream of calls under a rate (sink rate limits, provider poll limits)."""

from __future__ import annotations

import asyncio
import collections
import math
import time


class RateLimiter:
    """At most `rate_per_s` calls a second, spread evenly, and never more than the allowance
    in any window of `window_s` (a provider's "120 requests per minute" is rate 2/s with a 60 s
    window of 120).

    Spacing alone is not enough: when the event loop stalls, callers that slept until their
    slot all wake late together and would go out in a burst. So each caller also checks, just
    before it goes, how many calls the last window already saw, and waits for room.
    """

    def __init__(self, rate_per_s: float | None, window_s: float = 1.0) -> None:
        self.interval = 1.0 / rate_per_s if rate_per_s else 0.0
        self.window_s = window_s
        self.allowance = max(1, math.floor(rate_per_s * window_s)) if rate_per_s else 0
        self.next_at = 0.0  # the next free slot (also pushed out by hold())
        self._sent: collections.deque[float] = collections.deque()

    async def acquire(self) -> None:
        now = time.monotonic()
        slot = max(now, self.next_at)
        self.next_at = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)
        if self.allowance:
            await self._room()

    async def _room(self) -> None:
        while True:
            now = time.monotonic()
            while self._sent and now - self._sent[0] >= self.window_s:
                self._sent.popleft()
            if len(self._sent) < self.allowance:
                self._sent.append(now)  # no await between the check and the record
                return
            await asyncio.sleep(self._sent[0] + self.window_s - now)

    def hold(self, seconds: float) -> None:
        """Nothing before `seconds` from now (a Retry-After the other side asked for)."""
        self.next_at = max(self.next_at, time.monotonic() + seconds)
