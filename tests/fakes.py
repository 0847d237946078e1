"""Fake destinations on 127.0.0.1 for sink and end-to-end tests; nothing here touches the internet.

* `AsgiServer` — any ASGI app under a real uvicorn server on a free port, in a background
  thread. `start()`/`stop()` or `with AsgiServer(app) as server:`; `server.url` is its root.
* `FakeSink(AsgiServer)` — records every request (`requests`, a list of `Recorded`) and answers
  from a script: `script(Reply(…), …)` queues answers consumed in order, `route(path, Reply)`
  pins an answer to a path (never consumed), otherwise `default` answers. A `Reply` has a
  status, body, headers, an optional `delay_s` (a slow or hanging server) and `chunked`
  (stream the body without Content-Length).
* `FakeSlack(FakeSink)` — answers like a Slack incoming webhook. `webhook_url("ok")` answers
  200 `ok`; `webhook_url("channel_not_found")` 404 with that word, and so on for every key of
  `SLACK_ANSWERS` (`rate_limited` is 429 with `Retry-After: 7`, `rollup_error` is 500).
  `messages` are the JSON bodies received.
* `FileServer(FakeSink)` — static files: `add(path, body, content_type)` returns the URL;
  `add_png`/`add_jpg` serve small valid images; unknown paths answer 404.
* `MotoS3` — moto's S3 server (`moto_server`, from moto[server]) as a subprocess on a free
  port: `endpoint_url`, `client()` (a boto3 client, close it or use it as a context manager),
  `reset()`. Tests that build aiobotocore clients must set AWS_ACCESS_KEY_ID and
  AWS_SECRET_ACCESS_KEY to dummy values (monkeypatch.setenv).

Every server stops on `stop()` or when its `with` block ends; stopping twice is harmless.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# A 1x1 transparent PNG and the smallest baseline JPEG header+body, as real files start.
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
JPG_BYTES = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    body: bytes | str = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait this long before answering (a slow or hanging server)
    chunked: bool = False  # stream the body in 64 KiB chunks, without Content-Length
    content_type: str = "text/plain; charset=utf-8"

    @property
    def data(self) -> bytes:
        return self.body.encode() if isinstance(self.body, str) else self.body


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as the server saw it. Header names are lower-case."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    at: float  # time.monotonic() when the request arrived

    def json(self) -> Any:
        return json.loads(self.body)


def free_socket(port: int = 0) -> socket.socket:
    """A listening-ready socket bound to 127.0.0.1 on `port`, or one the OS picked (no race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def free_port() -> int:
    with contextlib.closing(free_socket()) as sock:
        return int(sock.getsockname()[1])


class AsgiServer:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: ASGIApp, port: int = 0) -> None:
        self.app = app
        self._socket = free_socket(port)  # a given port: a server that comes back after a stop
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> Self:
        """Start serving; return once the server accepts connections."""
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", ws="none",
            http="h11", loop="uvloop", timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True,
            name=f"fake-server-{self.port}",
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the fake server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread; requests still sleeping are cut short."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def pause(self, seconds: float) -> None:
        """Sleep in the server's loop, waking early when the server stops."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stopping.is_set():
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))


class FakeSink(AsgiServer):
    """Records every request and answers from a script (see the module docstring)."""

    def __init__(self, default: Reply | None = None, port: int = 0) -> None:
        super().__init__(Starlette(routes=[Route("/{path:path}", self._endpoint,
                                                 methods=ALL_METHODS)]), port)
        self.default = default or Reply(200, "ok")
        self._lock = threading.Lock()
        self._script: collections.deque[Reply] = collections.deque()
        self._routes: dict[str, Reply] = {}
        self._requests: list[Recorded] = []

    def script(self, *replies: Reply) -> None:
        """Queue answers, used in order by the next requests (before routes and default)."""
        with self._lock:
            self._script.extend(replies)

    def route(self, path: str, reply: Reply) -> str:
        """Answer every request to `path` with `reply`; return that path's URL."""
        with self._lock:
            self._routes[path] = reply
        return self.url + path

    @property
    def requests(self) -> list[Recorded]:
        """The requests so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._script.clear()

    def answer(self, request: Recorded) -> Reply:
        """The reply for `request`: the next scripted one, else its path's, else the default."""
        with self._lock:
            if self._script:
                return self._script.popleft()
            return self._routes.get(request.path, self.default)

    async def _endpoint(self, request: Request) -> Response:
        recorded = Recorded(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
            at=time.monotonic(),
        )
        with self._lock:
            self._requests.append(recorded)
        reply = self.answer(recorded)
        if reply.delay_s:
            await self.pause(reply.delay_s)
        return self._response(reply, head=request.method == "HEAD")

    def _response(self, reply: Reply, head: bool) -> Response:
        if reply.chunked and not head:
            return StreamingResponse(_chunks(reply.data), reply.status, dict(reply.headers),
                                     media_type=reply.content_type)
        return Response(b"" if head else reply.data, reply.status, dict(reply.headers),
                        media_type=reply.content_type)


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


SLACK_ANSWERS: dict[str, Reply] = {
    "ok": Reply(200, "ok"),
    "invalid_payload": Reply(400, "invalid_payload"),
    "too_many_attachments": Reply(400, "too_many_attachments"),
    "user_not_found": Reply(400, "user_not_found"),
    "action_prohibited": Reply(403, "action_prohibited"),
    "invalid_token": Reply(403, "invalid_token"),
    "posting_to_general_channel_denied": Reply(403, "posting_to_general_channel_denied"),
    "channel_not_found": Reply(404, "channel_not_found"),
    "no_service": Reply(404, "no_service"),
    "channel_is_archived": Reply(410, "channel_is_archived"),
    "no_active_hooks": Reply(410, "no_active_hooks"),
    "rate_limited": Reply(429, "rate_limited", {"Retry-After": "7"}),
    "rollup_error": Reply(500, "rollup_error"),
}


class FakeSlack(FakeSink):
    """A Slack incoming-webhook endpoint; the URL's last segment picks the answer."""

    def webhook_url(self, behaviour: str = "ok") -> str:
        """A webhook URL that answers as `behaviour` (a key of SLACK_ANSWERS) does."""
        if behaviour not in SLACK_ANSWERS:
            raise KeyError(f"unknown Slack behaviour {behaviour!r}; known: {list(SLACK_ANSWERS)}")
        return f"{self.url}/services/T0000TEST/B0000TEST/{behaviour}"

    def answer(self, request: Recorded) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
        behaviour = request.path.rsplit("/", 1)[-1]
        return SLACK_ANSWERS.get(behaviour, Reply(404, "no_service"))

    @property
    def messages(self) -> list[Any]:
        """The JSON payloads posted so far."""
        return [r.json() for r in self.requests if r.method == "POST"]


class FileServer(FakeSink):
    """Static files by path; anything else is 404."""

    def __init__(self) -> None:
        super().__init__(default=Reply(404, "not found"))

    def add(self, path: str, body: bytes, content_type: str, *, chunked: bool = False) -> str:
        """Serve `body` at `path` with `content_type`; return its URL."""
        return self.route(path, Reply(200, body, content_type=content_type, chunked=chunked))

    def add_png(self, path: str = "/img/out.png") -> str:
        return self.add(path, PNG_BYTES, "image/png")

    def add_jpg(self, path: str = "/img/out.jpg") -> str:
        return self.add(path, JPG_BYTES, "image/jpeg")


def moto_command(port: int) -> list[str]:
    """`moto_server` next to the running interpreter, else on PATH, else `python -m`."""
    beside = Path(sys.executable).parent / "moto_server"
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    base = [found] if found else [sys.executable, "-m", "moto.server"]
    return [*base, "-H", "127.0.0.1", "-p", str(port)]


class MotoS3:
    """moto's S3 server as a subprocess on 127.0.0.1 (see the module docstring)."""

    ACCESS_KEY = "testing"
    SECRET_KEY = "testing"
    REGION = "us-east-1"

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Self:
        """Start moto_server; return once it answers HTTP."""
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
               "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY}
        self._proc = subprocess.Popen(moto_command(self.port), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self._proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{self.endpoint_url}/moto-api/", timeout=1)
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every bucket and object."""
        httpx.post(f"{self.endpoint_url}/moto-api/reset", timeout=5).raise_for_status()

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """A boto3 S3 client for this server (dummy credentials), closed afterwards."""
        import boto3  # type: ignore[import-untyped]  # moto[server] brings it; tests only

        client = boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.REGION,
            aws_access_key_id=self.ACCESS_KEY, aws_secret_access_key=self.SECRET_KEY,
        )
        try:
            yield client
        finally:
            client.close()
