"""The due-loop: a wake-up claims at once; a nudge (another process committed something) asks
idle_wait first and claims only when it says something is due now."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from receiver.core.dueloop import DueLoop


class Owner:
    """Counts claims and idle looks; `due_in` is what idle_wait answers (None: nothing)."""

    def __init__(self) -> None:
        self.claims = 0
        self.looks = 0
        self.due_in: float | None = None
        self.changed = asyncio.Event()

    async def claim(self) -> int:
        """Takes what is due now (1), else nothing (0: the loop goes back to sleep)."""
        self.claims += 1
        self.changed.set()
        if self.due_in is not None and self.due_in <= 0:
            self.due_in = None
            return 1
        return 0

    async def idle_wait(self) -> float | None:
        self.looks += 1
        self.changed.set()
        return self.due_in

    async def settled(self) -> None:
        """Until the loop has been quiet (asleep) for a moment."""
        while True:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self.changed.wait()
                    continue
            return


@contextlib.asynccontextmanager
async def running(owner: Owner) -> AsyncIterator[DueLoop]:
    loop = DueLoop(owner.claim, owner.idle_wait, recheck_s=30.0, name="test")
    task = asyncio.create_task(loop.run())
    try:
        await owner.settled()
        yield loop
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_nudge_with_nothing_due_looks_but_does_not_claim() -> None:
    owner = Owner()
    async with running(owner) as loop:
        assert (owner.claims, owner.looks) == (1, 1)  # the first round, then asleep
        for _ in range(5):
            loop.nudge()
            await owner.settled()
        assert owner.claims == 1
        assert owner.looks == 6
        owner.due_in = 60.0  # something due later: still only a look
        loop.nudge()
        await owner.settled()
        assert (owner.claims, owner.looks) == (1, 7)


@pytest.mark.parametrize("due_in", [0.0, -1.0])
async def test_a_nudge_claims_when_something_is_due_now(due_in: float) -> None:
    owner = Owner()
    async with running(owner) as loop:
        owner.due_in = due_in
        loop.nudge()
        await owner.settled()
        assert owner.claims == 3  # the first round; the due one; the empty claim after it
        assert owner.due_in is None


async def test_a_wake_claims_even_when_nothing_looks_due() -> None:
    owner = Owner()
    async with running(owner) as loop:
        loop.wake()
        await owner.settled()
        assert owner.claims == 2
        loop.nudge()
        loop.wake()  # a wake after a nudge still claims
        await owner.settled()
        assert owner.claims == 3
        loop.wake()
        loop.nudge()  # and a nudge does not weaken a wake that came first
        await owner.settled()
        assert owner.claims == 4
