"""Log redaction: configured secrets and sensitive keys never reach a log line."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from receiver import logs

ROOT = Path(__file__).resolve().parents[1]


def test_redactor_masks_sensitive_keys_and_secret_values() -> None:
    redact = logs.Redactor(["s3cr3t-value", "tok-123456", 'quo"te\\back'])
    record = redact(None, "info", {
        "event": "x",
        "api_key": "anything",
        "message": "bad request with s3cr3t-value inside",
        "headers": {"Authorization": "Bearer tok-123456", "X-Other": "fine"},
        "list": ["tok-123456", 3],
        "nested": [{"token": "deep"}],
        "tricky": 'a quo"te\\back b',
        "s3cr3t-value": 1,  # a secret in a key is masked too
    })
    text = redact.render(None, "info", record)
    out = json.loads(text)
    for leaked in ("s3cr3t-value", "tok-123456", "anything", "deep", "quo"):
        assert leaked not in text, leaked
    assert out["headers"]["X-Other"] == "fine" and out["list"][1] == 3
    assert out["api_key"] == logs.MASK and out["nested"] == [{"token": logs.MASK}]
    assert out["tricky"] == "a [redacted] b" and out["[redacted]"] == 1
    assert out["message"] == "bad request with [redacted] inside"


@pytest.mark.parametrize("batched", [False, True])
def test_configured_logging_writes_redacted_json_for_structlog_and_stdlib(batched: bool) -> None:
    # batched: the LoopBatchedStream is structlog's logger itself (no loop runs here, so each
    # line is written at once).
    stream = io.StringIO()
    with _logging_to(stream, ["hunter2-secret"], batched=batched):
        with structlog.contextvars.bound_contextvars(request_id="r1"):
            structlog.get_logger("t").info("hello", note="hunter2-secret leaked")
        logging.getLogger("uvicorn.error").warning("stdlib says hunter2-secret")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "hello" and lines[0]["request_id"] == "r1"
    assert "hunter2-secret" not in stream.getvalue()
    assert lines[1]["level"] == "warning"


@contextlib.contextmanager
def _logging_to(stream: io.StringIO, secrets: list[str], **options: Any) -> Iterator[None]:
    """hookyard's logging configured onto `stream` for the block; structlog's defaults after."""
    logs.configure(secrets, stream=stream, **options)
    try:
        yield
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.pieces: list[str] = []

    def write(self, text: str) -> int:
        self.writes += 1
        self.pieces.append(text)
        return super().write(text)


def test_a_batched_stream_writes_one_loop_turns_lines_in_one_call_after_the_turn() -> None:
    target = _CountingStream()
    out = logs.LoopBatchedStream(target)

    async def turn() -> str:
        for i in range(3):
            out.write(f"line {i}\n")
            out.flush()
        seen = target.getvalue()  # nothing yet: the turn is not over
        await asyncio.sleep(0)  # the loop runs the scheduled drain
        out.write("line 3\n")
        out.flush()
        await asyncio.sleep(0)
        return seen

    assert asyncio.run(turn()) == ""
    assert target.getvalue() == "line 0\nline 1\nline 2\nline 3\n"
    assert target.writes == 2


def test_structlog_lines_of_one_loop_turn_go_out_in_one_write_in_order() -> None:
    target = _CountingStream()

    async def turn() -> None:
        log = structlog.get_logger("t")
        for i in range(3):
            log.info("webhook.accepted", n=i, note="hunter2-secret")
        logging.getLogger("uvicorn.error").warning("stdlib, same turn")
        await asyncio.sleep(0)

    with _logging_to(target, ["hunter2-secret"], batched=True):
        asyncio.run(turn())
    lines = [json.loads(line) for line in target.getvalue().splitlines()]
    assert [line.get("n") for line in lines] == [0, 1, 2, None]
    assert lines[0]["level"] == "info" and lines[3]["event"] == "stdlib, same turn"
    assert "hunter2-secret" not in target.getvalue()
    assert target.writes == 1


def test_a_batched_stream_writes_at_once_where_no_loop_runs_pending_lines_first() -> None:
    target = _CountingStream()
    out = logs.LoopBatchedStream(target)

    async def on_the_loop() -> None:
        out.write("from the loop\n")
        out.flush()
        # a thread with no loop (the database thread, say) logs before the turn ends
        await asyncio.to_thread(lambda: (out.write("from a thread\n"), out.flush()))
        assert target.getvalue() == "from the loop\nfrom a thread\n"

    asyncio.run(on_the_loop())
    assert target.writes == 1


def test_lines_still_pending_when_the_process_exits_are_written() -> None:
    # The loop stops in the turn that logged, so its drain never runs: the line is written at
    # exit (logs' atexit hook, and logging's own shutdown, which flushes the handler).
    script = (
        "import asyncio, sys, structlog\n"
        "from receiver import logs\n"
        "logs.configure([], batched=True)\n"
        "loop = asyncio.new_event_loop()\n"
        "def turn():\n"
        "    structlog.get_logger('t').info('last words')\n"
        "    loop.stop()\n"
        "loop.call_soon(turn)\n"
        "loop.run_forever()\n"
        "sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 3
    assert [json.loads(line)["event"] for line in done.stdout.splitlines()] == ["last words"]


def test_a_batched_stream_writes_whole_lines_at_most_pipe_buf_bytes_at_a_time() -> None:
    # Processes sharing a pipe (serve --workers N under journald) must never interleave
    # mid-line: only writes of at most PIPE_BUF bytes are atomic on a pipe.
    target = _CountingStream()
    out = logs.LoopBatchedStream(target)
    lines = [f'{{"n": {i}, "pad": "{"é" * (i % 7) + "x" * (150 + i % 300)}"}}\n'
             for i in range(400)]
    lines.append("y" * 9000 + "\n")  # a line longer than PIPE_BUF goes alone

    async def turn() -> None:
        for line in lines:
            out.write(line)
            out.flush()
        await asyncio.sleep(0)

    asyncio.run(turn())
    assert target.getvalue() == "".join(lines)
    assert all(piece.endswith("\n") for piece in target.pieces)
    assert all(len(p.encode()) <= select.PIPE_BUF for p in target.pieces[:-1])
    assert target.pieces[-1] == lines[-1]
    assert target.writes < len(lines) / 5  # still batched


class _NoStructlog:
    """A logger that must not be used: hot_info's direct path does not go through it."""

    def info(self, *_: object, **__: object) -> None:
        raise AssertionError("went through structlog")


def test_a_hot_line_is_the_line_structlog_writes_without_going_through_it() -> None:
    target = _CountingStream()
    fields = {"source": "rendergrid", "event_id": "evt_1", "duplicate": False,
              "note": "hunter2-secret", "n": 1.5}

    async def turn() -> None:
        with structlog.contextvars.bound_contextvars(request_id="r1", source="ignored"):
            structlog.get_logger("t-hot").info("webhook.accepted", **fields)
            logs.hot_info(_NoStructlog(), "webhook.accepted", **dict(fields))
        await asyncio.sleep(0)

    with _logging_to(target, ["hunter2-secret"], cache=True, batched=True):
        asyncio.run(turn())
    slow, fast = (json.loads(line) for line in target.getvalue().splitlines())
    assert slow.pop("timestamp") <= fast.pop("timestamp")
    assert list(fast.items()) == list(slow.items())  # same keys, same order, same masking
    assert fast["source"] == "rendergrid" and fast["request_id"] == "r1"
    assert "hunter2-secret" not in target.getvalue()
    assert target.writes == 1


def test_a_hot_line_goes_through_structlog_where_hookyards_configuration_is_not_in_force(
) -> None:
    with _logging_to(io.StringIO(), [], cache=True, batched=True), \
            structlog.testing.capture_logs() as captured:
        logs.hot_info(structlog.get_logger("t-hot"), "webhook.accepted", n=1)
    assert captured == [{"event": "webhook.accepted", "n": 1, "log_level": "info"}]


def test_a_hot_line_is_not_written_below_the_configured_level() -> None:
    target = io.StringIO()
    with _logging_to(target, [], cache=True, batched=True, level=logging.WARNING):
        logs.hot_info(_NoStructlog(), "webhook.accepted", n=1)
    assert target.getvalue() == ""
