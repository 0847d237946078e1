"""Pacing: keep a stream of calls under a rate (sink rate limits, provider poll limits)."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """Spaces calls `1/rate_per_s` apart (a token bucket of size one), so no window of any
    length ever sees more than its share: 120/min becomes one call every 0.5 s."""

    def __init__(self, rate_per_s: float | None) -> None:
        self.interval = 1.0 / rate_per_s if rate_per_s else 0.0
        self.next_at = 0.0

    async def acquire(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        wait = self.next_at - now
        self.next_at = max(now, self.next_at) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)

    def hold(self, seconds: float) -> None:
        """Nothing before `seconds` from now (a Retry-After the provider asked for)."""
        self.next_at = max(self.next_at, time.monotonic() + seconds)
