"""Progress of a long CLI verb (replay, prune, db copy) on stderr.

On a terminal one line is redrawn in place (with a bar when the total is known); otherwise
(a log file, CI) each update is a line of its own, so the record reads top to bottom.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """`update(done, total, what)` draws `[####----] done/total what` on a terminal, or writes
    `{label}: done/total what` as a line; at most one update per `min_interval_s` (the last,
    done == total, always shows). `finish()` ends a line drawn in place."""

    WIDTH = 30

    def __init__(self, label: str, *, bar: bool = True, min_interval_s: float = 0.0) -> None:
        self.label = label
        self.bar = bar
        self.min_interval_s = min_interval_s
        self.tty = sys.stderr.isatty()
        self.drawn = False
        self._shown = float("-inf")

    def update(self, done: int, total: int, what: str) -> None:
        now = time.monotonic()
        if now - self._shown < self.min_interval_s and done < total:
            return
        self._shown = now
        text = f"{done}/{total} {what}"
        if not self.tty:
            print(f"{self.label}: {text}", file=sys.stderr, flush=True)
            return
        if self.bar:
            filled = min(self.WIDTH, self.WIDTH * done // max(total, 1))
            text = f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {text}"
        else:
            text = f"{self.label}: {text}"
        print(f"\r{text}  ", end="", file=sys.stderr, flush=True)
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            print(file=sys.stderr)
            self.drawn = False
