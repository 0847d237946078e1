"""receiver.core.loops.running_loop: asyncio.get_running_loop() without its getpid() call."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from receiver.core import loops


async def _ask() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]:
    return loops.running_loop(), asyncio.get_running_loop()


def test_it_is_the_running_loop_and_the_next_one_after_it_stops() -> None:
    for _ in range(3):  # a new loop on the same thread each time: never the stopped one
        got, running = asyncio.run(_ask())
        assert got is running
    with pytest.raises(RuntimeError):
        loops.running_loop()  # no loop runs here any more


def test_each_thread_gets_its_own_loop() -> None:
    found: list[bool] = []

    def in_thread() -> None:
        got, running = asyncio.run(_ask())
        found.append(got is running)

    async def main() -> None:
        mine = loops.running_loop()
        thread = threading.Thread(target=in_thread)
        thread.start()
        await asyncio.to_thread(thread.join)
        assert loops.running_loop() is mine is asyncio.get_running_loop()

    asyncio.run(main())
    assert found == [True]


def test_a_forked_child_forgets_the_parents_loop() -> None:
    async def main() -> int:
        loops.running_loop()
        pid = os.fork()
        if pid == 0:  # the child: the parent's loop object was copied, it does not run here
            os._exit(0 if loops._seen is None else 1)
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        return status

    assert os.waitstatus_to_exitcode(asyncio.run(main())) == 0


def test_the_worker_command_runs_its_loop_on_uvloop() -> None:
    """`hookyard worker` (serving.run_loop) runs on uvloop, as uvicorn runs `serve`."""
    from receiver import serving

    async def kind() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert serving.run_loop(kind()).startswith("uvloop")
