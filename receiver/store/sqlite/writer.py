"""The ingest writer process: `hookyard serve` commits its batches of webhooks in a child
process of its own, not on a thread of the web process.

Why a process: the batch write is mostly C (SQLite), but every statement step hands the GIL
back and must win it again from a busy event loop, and every hop between the loop and a
database thread waits for the loop in turn. Measured under wrk (bench/ingest, WHATIF_TRACE),
a batch spent ~3x as long in that dance as in its transaction, and the transaction itself
ran ~2x slower than alone. A child has its own interpreter and GIL: the loop hands it a
pickled batch over a socket pair and reads back what the write did, one round trip a batch.

Durability is unchanged: the child commits (WAL, `synchronous = FULL`) under the same
writers' lock as every other writer of the file before it answers, and the web process
answers 200 only after that. If the child dies, the batch in flight fails as a store outage
(503, the provider retries, dedupe makes a committed one a duplicate) and the next batch
starts a new child. The child ignores SIGINT and SIGTERM (a terminal's Ctrl-C or systemd's
stop reach the whole group): it exits when the web process closes the socket, after the
web process drained its last batches, or when the web process dies.

Only `hookyard serve` uses it (receiver.store.open_store(writer_process=True)); the CLI, the
worker and tests that open a store themselves write on the store's own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import pickle
import signal
import socket
import sqlite3
import struct
import sys
from collections.abc import Callable
from typing import Any

import structlog

from receiver.core.errors import StoreUnavailable
from receiver.store.sqlite.connection import (
    Sql,
    configure,
    exclusive,
    in_transaction,
    store_error,
)

log = structlog.get_logger("hookyard.store")

FRAME = struct.Struct("!I")  # a frame: its length, then a pickle
START_TIMEOUT_S = 30.0  # the child imports the store modules and opens the file
STOP_TIMEOUT_S = 5.0
CHILD = f"import sys; from {__name__} import main; sys.exit(main(sys.argv[1:]))"


class WriterProcess:
    """A child process that writes event batches to one SQLite file; one batch at a time."""

    def __init__(self, path: str, busy_timeout_ms: int, write: Callable[[Sql, Any], Any]) -> None:
        """`write(connection, batch)`, a module-level function, runs in the child, inside the
        transaction (the child imports it by name)."""
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.write_fn = f"{write.__module__}:{write.__qualname__}"
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the child and wait until it has opened the file (raises StoreUnavailable)."""
        ours, theirs = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CHILD, str(theirs.fileno()), self.path,
                str(self.busy_timeout_ms), self.write_fn,
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._reader, self._writer = await asyncio.open_connection(sock=ours)
        try:
            ok, error = await asyncio.wait_for(self._answer(), START_TIMEOUT_S)
            if not ok:
                raise error  # it could not open the file
        except BaseException:
            await self.stop()
            raise
        log.info("store.writer_started", pid=self._proc.pid)

    async def write(self, batch: Any) -> Any:
        """`write(connection, batch)` in the child, in a transaction: what it returned, or its
        error raised here as the store's thread would raise it."""
        payload = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        async with self._lock:
            try:
                if not await self._send(payload):
                    # It died between batches (killed, out of memory) and the frame never
                    # reached it: nothing was in flight, so this batch goes to a new one
                    # instead of failing.
                    log.error("store.writer_exited", pid=self.pid, returncode=self._returncode())
                    await self.stop()
                    if not await self._send(payload):
                        raise StoreUnavailable(
                            "the ingest writer process exited as it started; retry later"
                        )
                ok, value = await self._answer()
            except StoreUnavailable:
                raise
            except (sqlite3.Error, OSError) as exc:  # a new child could not open the file
                raise store_error(exc) from exc
            except BaseException:
                # Cancelled or broken mid-exchange: the stream is out of step with the
                # child, so it goes; the next batch starts a new one.
                await self.stop()
                raise
        if ok:
            return value
        # The write failed in the child, which is fine and stays: its error is the batch's.
        raise store_error(value) if isinstance(value, sqlite3.Error | OSError) else value

    async def _send(self, payload: bytes) -> bool:
        """Hand a frame to the child, starting one if there is none. False: the child had
        already gone (its end closed before the frame could reach it; the loop may learn of
        that end only now, after the process itself was reaped). A frame too large for the
        socket's buffer that a dying child did read whole, commit and not answer is sent again
        too: its events come back as duplicates of themselves, stored once."""
        if self._writer is None:
            await self.start()
        assert self._reader is not None and self._writer is not None
        if self._reader.at_eof():
            return False
        self._writer.write(FRAME.pack(len(payload)) + payload)
        try:
            await self._writer.drain()
        except ConnectionError:  # the write failed, or the transport was closed already
            return False
        return True

    async def _answer(self) -> tuple[bool, Any]:
        """The child's next answer: (ok, result or error)."""
        assert self._reader is not None
        try:
            (size,) = FRAME.unpack(await self._reader.readexactly(FRAME.size))
            ok, value = pickle.loads(await self._reader.readexactly(size))  # noqa: S301 (our child)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            code = self._returncode()
            log.error("store.writer_exited", pid=self.pid, returncode=code)
            await self.stop()
            raise StoreUnavailable(
                "the ingest writer process exited (returncode "
                f"{code}); the next batch starts a new one"
            ) from exc
        return ok, value

    def _returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    async def stop(self) -> None:
        """Close the socket; the child finishes its batch and exits (killed if it does not)."""
        writer, proc = self._writer, self._proc
        self._reader = self._writer = None
        self._proc = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# -- the child ----------------------------------------------------------------------------------


def _serve(sock: socket.socket, path: str, busy_timeout_ms: int, write_fn: str) -> None:
    module, _, name = write_fn.partition(":")
    write_batch = getattr(importlib.import_module(module), name)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        configure(conn, busy_timeout_ms)
        # A batch's multi-row INSERT keeps a statement journal (the pages it changed, to undo
        # the statement alone); past 64 KiB SQLite spills it to a temporary file, written and
        # closed again on every batch (py-spy: pwrite during the inserts, close at commit).
        # In memory it costs at most the pages one batch changes (max_batch events).
        conn.execute("PRAGMA temp_store = MEMORY")
        lock_fd = os.open(f"{path}-lock", os.O_RDWR | os.O_CREAT, 0o644)
    except Exception as exc:
        _send(sock, (False, exc))
        return
    _send(sock, (True, None))  # ready
    while True:
        header = _recv(sock, FRAME.size)
        if header is None:
            return  # the web process closed the socket (or died)
        body = _recv(sock, FRAME.unpack(header)[0])
        if body is None:
            return
        batch = pickle.loads(body)  # noqa: S301 (from our parent, over a private socket pair)
        try:
            reply: tuple[bool, Any] = (
                True, exclusive(conn, lock_fd, in_transaction, write_batch, batch)
            )
        except Exception as exc:  # the parent raises it for the batch's callers
            reply = (False, exc)
        _send(sock, reply)


def _send(sock: socket.socket, reply: tuple[bool, Any]) -> None:
    try:
        payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # an exception that cannot be pickled
        payload = pickle.dumps((False, sqlite3.DatabaseError(repr(reply[1])[:300] or repr(exc))))
    sock.sendall(FRAME.pack(len(payload)) + payload)


def _recv(sock: socket.socket, size: int) -> bytes | None:
    parts = []
    while size:
        part = sock.recv(min(size, 1 << 20))
        if not part:
            return None
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd, path, busy_timeout_ms, write_fn = int(argv[0]), argv[1], int(argv[2]), argv[3]
    with socket.socket(fileno=fd) as sock:
        _serve(sock, path, busy_timeout_ms, write_fn)
    return 0
