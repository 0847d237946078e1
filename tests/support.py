"""Test kit: configs in temp dirs, the app in-process, and real `hookyard serve` processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import hashlib
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receiver import settings as settings_mod
from receiver.app import Hookyard, create_app
from receiver.core import signing
from receiver.store import EventFilter, Job, Store
from receiver.store.sqlite import SqliteStore

T = TypeVar("T")
App = tuple[httpx.AsyncClient, Hookyard]  # the `app` fixture: a client and the running service
Signed = Callable[[str, bytes], dict[str, str]]  # the `signed` fixture: (source, body) -> headers

FIXTURES = Path(__file__).parent / "fixtures"
RENDERGRID_SECRET = "rg-test-secret-0123456789"
RENDERFUL_SECRET = "rf-test-secret-9876543210"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

BASE_CONFIG = """
[server]
database = "sqlite:///{db}"
max_body_bytes = {max_body_bytes}

[sources.rendergrid]
provider = "rendergrid"
secrets = ["{rendergrid_secret}"]

[sources.renderful]
provider = "renderful"
secrets = ["{renderful_secret}"]
signature = {{ header = "X-Renderful-Signature" }}

[sources.replicate]
provider = "generic"
signature = {{ scheme = "standard-webhooks" }}
secrets = ["{whsec}"]

[sinks.log]
type = "jsonl"
path = "{jsonl}"

[sinks.other]
type = "jsonl"
path = "{jsonl}.other"

[[routes]]
sources = ["*"]
types = ["*"]
sinks = ["log"]

[[routes]]
sources = ["rendergrid"]
types = ["generation.completed"]
sinks = ["other", "log"]
"""


def write_config(tmp: Path, text: str | None = None, **values: Any) -> Path:
    """Write BASE_CONFIG (or `text`) with paths inside `tmp`; return the file."""
    fields = {
        "db": tmp / "hookyard.db",
        "jsonl": tmp / "events.jsonl",
        "max_body_bytes": 1_048_576,
        "rendergrid_secret": RENDERGRID_SECRET,
        "renderful_secret": RENDERFUL_SECRET,
        "whsec": WHSEC,
        **values,
    }
    path = tmp / "hookyard.toml"
    path.write_text((text or BASE_CONFIG).format(**fields))
    return path


CDN = "https://cdn.example.com/renders"


def make_event(n: int = 0, **changes: Any) -> dict[str, Any]:
    """A normalized event as sinks receive it: the `n`th of a series, with `changes` on top.

    Sink tests that want other defaults bind them with `functools.partial(make_event, ...)`;
    every value is a fresh copy, so a test may mutate what it gets.
    """
    job_id = f"c0ea4d5b-0000-4000-8000-{n + 1:012d}"
    event: dict[str, Any] = {
        "id": f"evt_01JDTEST{n:018d}",
        "type": "generation.completed",
        "source": "rendergrid",
        "provider": "rendergrid",
        "job_id": job_id,
        "status": "completed",
        "outputs": [f"{CDN}/a.png", f"{CDN}/b.jpg", f"{CDN}/c.gif"],
        "error": None,
        "cost": 0.1,
        "model": "flux-pro",
        "received_at": "2026-11-22T10:00:59Z",
        "via": "webhook",
        "idempotency_key": f"rendergrid:{job_id}:completed",
        "metadata": {},
        "raw": {"n": n},
    }
    event.update(changes)
    return copy.deepcopy(event)


def load(tmp: Path, **values: Any) -> settings_mod.Settings:
    return settings_mod.load(str(write_config(tmp, **values)))


def fixture(provider: str, name: str) -> bytes:
    return (FIXTURES / provider / name).read_bytes()


def signed_headers(
    config: settings_mod.Settings, source: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    src = config.sources[source]
    verifier = signing.build_verifier(src.signature, src.secrets, src.tolerance_s)
    return {"Content-Type": "application/json", **verifier.sign(body, now=now)}


def post_signed(
    url: str, config: settings_mod.Settings | Path, body: bytes, source: str = "rendergrid",
    timeout: float = 30.0,
) -> httpx.Response:
    """POST `body` to a running server's /hooks/`source`, signed with the secrets of `config`
    (Settings, or the config file a `hookyard serve` process reads)."""
    if isinstance(config, Path):
        config = settings_mod.load(str(config))
    return httpx.post(f"{url}/hooks/{source}", content=body, timeout=timeout,
                      headers=signed_headers(config, source, body))


def fal_headers(
    key: Ed25519PrivateKey, body: bytes, now: float | None = None, request_id: str = "req-1",
    user_id: str = "user-1",
) -> dict[str, str]:
    """fal's four headers for `body`, signed with `key` (fal signs with Ed25519 keys of its
    own, so no source secret can sign for it). The message is request id, user id, timestamp
    and the hex SHA-256 of the raw body, one per line (handlers/providers/README.md)."""
    ts = str(int(time.time() if now is None else now))
    message = f"{request_id}\n{user_id}\n{ts}\n{hashlib.sha256(body).hexdigest()}".encode()
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": user_id,
        "X-Fal-Webhook-Timestamp": ts,
        "X-Fal-Webhook-Signature": key.sign(message).hex(),
    }


@contextlib.asynccontextmanager
async def app_client(
    config: settings_mod.Settings, store: Store | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Hookyard]]:
    """The app in-process with its lifespan running, and a client talking to it."""
    app = create_app(config, store)
    service: Hookyard = app.state.hookyard  # type: ignore[attr-defined]
    async with service.lifespan(None):  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://hookyard.test"
        ) as client:
            yield client, service


def wait_for(
    check: Callable[[], object], timeout: float = 20.0, what: str = "condition",
    interval: float = 0.05,
) -> None:
    """Poll `check` until it is truthy; the one way a sync test waits for the system.

    Tests wait on an observable signal, never a fixed sleep, so a slow machine only makes them
    slower, not wrong. The error names `what` so a timeout says which signal never came.
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


async def wait_until(
    check: Callable[[], object], timeout: float = 10.0, what: str = "condition",
    interval: float = 0.02,
) -> None:
    """`wait_for` for async tests; `check` may be a coroutine function (a store read, say)."""
    deadline = time.monotonic() + timeout
    while not await _result(check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(interval)


async def ask_store(db: Path, question: Callable[[Store], Awaitable[T]]) -> T:
    """Ask the store of the SQLite file `db` one question through the same API the admin
    endpoints use (tests read state this way, not by SQL), while a `hookyard serve` process or
    an app in this test may own the file."""
    store = SqliteStore(str(db))
    await store.open()
    try:
        return await question(store)
    finally:
        await store.close()


def read_store(db: Path, question: Callable[[Store], Awaitable[T]]) -> T:
    """`ask_store` for sync tests, on a thread of its own: some sync code (playwright's) runs
    an event loop of its own on the test's thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, ask_store(db, question)).result()


async def stored_counts(db: Path) -> tuple[int, int]:
    """(events, delivery rows) in `db`."""

    async def count(store: Store) -> tuple[int, int]:
        return await store.count_events(), sum((await store.delivery_counts()).values())

    return await ask_store(db, count)


def delivery_counts(db: Path) -> dict[tuple[str, str], int]:
    """{(sink, status): rows} of the deliveries in `db`."""
    return read_store(db, lambda store: store.delivery_counts())


def status_counts(db: Path) -> dict[str, int]:
    """{status: rows} of the deliveries in `db`, over all sinks."""
    found: dict[str, int] = {}
    for (_, status), n in delivery_counts(db).items():
        found[status] = found.get(status, 0) + n
    return found


def all_events(db: Path) -> list[dict[str, Any]]:
    """Every event in `db` (JSON without `raw`), newest first, page by page."""

    async def ask(store: Store) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while page := await store.list_events(
            EventFilter(), before=found[-1]["id"] if found else None, limit=500
        ):
            found += page
        return found

    return read_store(db, ask)


def events_by_job(db: Path) -> dict[str, list[str]]:
    """{job id: ids of the events stored for it} over every event in `db`."""
    found: dict[str, list[str]] = {}
    for event in all_events(db):
        found.setdefault(event["job_id"], []).append(event["id"])
    return found


def deliveries(db: Path, sink: str | None = None) -> list[dict[str, Any]]:
    """The delivery rows of `db` (of one sink, or all), oldest first."""
    return read_store(db, lambda store: store.list_deliveries(sink=sink, limit=1000))


def job(db: Path, source: str, job_id: str) -> Job | None:
    return read_store(db, lambda store: store.get_job(source, job_id))


def job_state(db: Path, source: str, job_id: str) -> str:
    """The stored state of a watched job; "absent" if it is not (or no longer) stored."""
    found = job(db, source, job_id)
    return found.state if found else "absent"


async def _result(value: object) -> object:
    return await value if inspect.isawaitable(value) else value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A real `hookyard serve` process on 127.0.0.1; its output goes to `log_path`."""

    def __init__(
        self,
        config_path: Path,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        self.config_path = config_path
        self.workdir = workdir
        self.env = {**os.environ, **(env or {})}
        self.args = list(args)  # e.g. ["--workers", "2"] or ["--no-worker"]
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Server:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "receiver.cli",
                    "serve",
                    "--config",
                    str(self.config_path),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hookyard exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"hookyard did not become ready:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait: the graceful path."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(20)
        return self.proc.returncode if self.proc else 0


class Worker(Server):
    """A real `hookyard worker` process (delivery and polling, no HTTP)."""

    def __init__(self, config_path: Path, workdir: Path, name: str = "worker") -> None:
        super().__init__(config_path, workdir)
        self.log_path = workdir / f"{name}.log"

    def start(self, timeout: float = 0.0) -> Worker:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "receiver.cli", "worker", "--config",
                 str(self.config_path)],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            )
        return self


