"""CLI progress on stderr: lines when piped, one line redrawn on a terminal, throttled."""

from __future__ import annotations

import io
import sys

import pytest

from receiver.progress import Progress


def test_piped_progress_is_a_line_per_update(capsys: pytest.CaptureFixture[str]) -> None:
    bar = Progress("replay")
    for done in (1, 2, 3):
        bar.update(done, 3, "deliveries queued")
    bar.finish()
    assert capsys.readouterr().err.splitlines() == [
        "replay: 1/3 deliveries queued",
        "replay: 2/3 deliveries queued",
        "replay: 3/3 deliveries queued",
    ]


def test_throttled_progress_still_shows_the_last_update(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bar = Progress("prune", bar=False, min_interval_s=3600)
    for done in range(1, 101):
        bar.update(done, 100, "events removed")
    assert capsys.readouterr().err.splitlines() == [
        "prune: 1/100 events removed",
        "prune: 100/100 events removed",
    ]


def test_a_terminal_gets_one_line_redrawn_and_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    bar = Progress("db copy")
    bar.update(5, 10, "rows (events)")
    bar.update(10, 10, "rows (events)")
    bar.finish()
    bar.finish()  # a second finish draws nothing more
    text = err.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.split("\r")[1:] == [
        f"[{'#' * 15}{'-' * 15}] 5/10 rows (events)  ",
        f"[{'#' * 30}] 10/10 rows (events)  \n",
    ]
