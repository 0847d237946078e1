"""The running event loop, without a system call per ask.

CPython 3.11's `asyncio.get_running_loop()` calls getpid() every time (to notice a fork), and
glibc no longer caches getpid: a system call each time. The webhook path asked twice per
request (the group commit's future, the log stream's flush): py-spy put ~40 % of the log
line's time on that one call. Here the loop last seen running on this thread is reused while
it is still running there (one thread runs at most one loop at a time), and forgotten in a
forked child.
"""

from __future__ import annotations

import asyncio
import os
import threading

_seen: tuple[int, asyncio.AbstractEventLoop] | None = None  # (thread id, its running loop)


def running_loop() -> asyncio.AbstractEventLoop:
    """What asyncio.get_running_loop() returns (RuntimeError when no loop runs here)."""
    global _seen
    seen = _seen
    thread = threading.get_ident()
    if seen is not None and seen[0] == thread and seen[1].is_running():
        return seen[1]
    loop = asyncio.get_running_loop()
    _seen = (thread, loop)
    return loop


def _forget() -> None:
    global _seen
    _seen = None


os.register_at_fork(after_in_child=_forget)
