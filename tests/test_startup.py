"""Start-up and readiness fail loudly and never hang: real `hookyard` processes against unusable
databases (each run under a timeout guard), and /readyz against a store that cannot write."""

from __future__ import annotations

import contextlib
import os
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.app import create_app
from receiver.store import StoreUnusable
from receiver.store.sqlite import SqliteStore
from tests.support import fixture, free_port, load, signed_headers, write_config

GUARD_S = 40  # a hang fails the test instead of blocking the suite
VERBS = [
    ["serve", "--port", "0"],
    ["events", "list"],
    ["jobs", "list"],
    ["deliveries", "list"],
    ["check"],
]


def hookyard(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=GUARD_S,
        check=False,
    )


def garbage(db: Path) -> None:
    db.write_bytes(b"this is not a database, it is a text file pretending\n" * 200)


def directory(db: Path) -> None:
    db.mkdir()


def under_a_file(db: Path) -> None:
    db.write_text("a plain file")  # the config then points at db/inside.db


def newer_schema(db: Path) -> None:
    # SQL on purpose (as in the other helpers here): these tests are about the file itself.
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (999)")
    conn.commit()
    conn.close()


CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("garbage", garbage, "is not a SQLite database"),
    ("directory", directory, "is a directory"),
    ("under-a-file", under_a_file, "is a file, not a directory"),
    ("newer-schema", newer_schema, "newer than this hookyard"),
]


@pytest.mark.parametrize(("name", "make", "message"), CASES, ids=[c[0] for c in CASES])
def test_an_unusable_database_is_exit_2_with_the_fix_for_every_verb(
    tmp_path: Path, name: str, make: Callable[[Path], None], message: str
) -> None:
    db = tmp_path / "hookyard.db"
    make(db)
    target = db / "inside.db" if name == "under-a-file" else db
    config = write_config(tmp_path, db=target)
    for verb in VERBS:
        started = time.monotonic()
        done = hookyard(tmp_path, *verb, "--config", str(config))
        output = done.stdout + done.stderr
        assert done.returncode == 2, (verb, output)
        assert message in done.stderr and str(target) in done.stderr, (verb, output)
        assert "Traceback" not in output, (verb, output)
        assert time.monotonic() - started < GUARD_S


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_database_without_permission_is_exit_2(tmp_path: Path) -> None:
    locked_dir = tmp_path / "ro"
    locked_dir.mkdir()
    locked_dir.chmod(0o500)
    config = write_config(tmp_path, db=locked_dir / "hookyard.db")
    for verb in VERBS:
        done = hookyard(tmp_path, *verb, "--config", str(config))
        assert done.returncode == 2 and "permissions" in done.stderr, (verb, done.stderr)


@contextlib.contextmanager
def held_in_rollback_mode(db: Path) -> Iterator[None]:
    """Another program holds an exclusive lock on a rollback-journal database."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("CREATE TABLE other (x)")
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_a_locked_database_is_exit_2_not_a_hang(tmp_path: Path) -> None:
    db = tmp_path / "hookyard.db"
    config = write_config(tmp_path, db=db)
    with held_in_rollback_mode(db):
        for verb in (["serve", "--port", "0"], ["events", "list"]):
            done = hookyard(tmp_path, *verb, "--config", str(config))
            assert done.returncode == 2, (verb, done.stdout + done.stderr)
            assert "is locked by another process" in done.stderr
            assert "Traceback" not in done.stdout + done.stderr


class FailingStore(SqliteStore):
    async def open(self) -> None:
        raise StoreUnusable("the database /x.db is locked by another process; stop it")


async def test_a_start_up_failure_inside_the_server_is_one_clean_message(tmp_path: Path) -> None:
    # The store may become unusable between the CLI's check and the server's start: the
    # lifespan then reports the message alone, and the server exits (not hangs).
    app = create_app(load(tmp_path), FailingStore(str(tmp_path / "x.db")))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)  # type: ignore[arg-type]
    assert sent == [
        {
            "type": "lifespan.startup.failed",
            "message": "the database /x.db is locked by another process; stop it",
        }
    ]


# -- readiness reflects whether the store can take a write ---------------------------------


class Serve:
    """`hookyard serve` with its output collected from a pipe (a pipe, unlike a log file, has
    no size limit for RLIMIT_FSIZE to hit)."""

    def __init__(self, tmp: Path, config: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "receiver.cli", "serve", "--config", str(config)),
                *("--host", "127.0.0.1", "--port", str(self.port)),
            ],
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.decode(errors="replace"))

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "".join(self.lines)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError("not ready:\n" + "".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._drainer.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def test_readyz_is_503_when_the_disk_takes_no_more_writes(tmp_path: Path) -> None:
    config = load(tmp_path)
    server = Serve(tmp_path, tmp_path / "hookyard.toml")
    try:
        server.wait_ready()
        # The disk is full now: no file of the server's (or of its ingest writer process,
        # receiver.store.sqlite.writer) may grow (RLIMIT_FSIZE = 0; Python ignores SIGXFSZ,
        # so writes fail with EFBIG as they would with ENOSPC).
        children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text()
        for pid in [server.proc.pid, *map(int, children.split())]:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        body = fixture("rendergrid", "completed.json")
        hook = httpx.post(
            f"{server.url}/hooks/rendergrid",
            content=body,
            headers=signed_headers(config, "rendergrid", body),
            timeout=20,
        )
        deadline = time.monotonic() + 10  # the readiness answer is cached for a second
        ready = httpx.get(f"{server.url}/readyz", timeout=20)
        while ready.status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
            ready = httpx.get(f"{server.url}/readyz", timeout=20)
    finally:
        server.stop()
    assert hook.status_code == 503
    assert ready.status_code == 503 and "cannot take a write" in ready.text
