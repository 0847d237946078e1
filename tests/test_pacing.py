"""The pacer: even spacing, no burst after a stall, whole windows respected, holds honoured."""

from __future__ import annotations

import asyncio
import itertools
import time

from receiver.core.pacing import RateLimiter


async def sends(limiter: RateLimiter, n: int, stall_s: float = 0.0) -> list[float]:
    """n callers acquire at once; the loop is blocked for stall_s right after they start."""
    times: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        times.append(time.monotonic())

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await asyncio.sleep(0.05)
    time.sleep(stall_s)  # noqa: ASYNC251 (on purpose: a busy event loop, every sleeper wakes late)
    await asyncio.gather(*tasks)
    return sorted(times)


def most_in_window(times: list[float], window: float) -> int:
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


async def test_calls_are_spaced_evenly() -> None:
    times = await sends(RateLimiter(20), 8)
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.045


async def test_a_stalled_loop_does_not_release_a_burst() -> None:
    times = await sends(RateLimiter(20), 40, stall_s=0.6)
    assert most_in_window(times, 1.0) <= 20  # spacing alone would let ~12 out at once


async def test_per_minute_style_window_is_respected() -> None:
    # "10 per 2 s" at 5/s: after a stall the whole window still never sees an 11th call.
    times = await sends(RateLimiter(5, window_s=2.0), 14, stall_s=1.0)
    assert most_in_window(times, 2.0) <= 10


async def test_hold_is_honoured_even_without_a_rate() -> None:
    limiter = RateLimiter(None)
    limiter.hold(0.3)
    start = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - start >= 0.28
