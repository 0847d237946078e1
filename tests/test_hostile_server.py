"""The server against a hostile world: fal callbacks for other fal customers, a disk that fills
up mid-append, and connections that send nothing (a real `hookyard serve` under a low
open-file limit)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from handlers.sinks import jsonl
from receiver import serving
from receiver import settings as settings_mod
from receiver.app import create_app
from receiver.core import signing
from receiver.core.errors import ConfigError, SignatureInvalid
from tests.support import Server, app_client, fixture, post_signed, write_config
from tests.test_signing import ED_KEYS, FAL_USER_ID, NOW, fal_headers, jwk

# -- fal: one key set signs for every fal customer --------------------------------------------


def fal_settings(**extra: Any) -> dict[str, Any]:
    return {"scheme": "fal", "jwks": {"keys": [jwk(ED_KEYS[0])]}, **extra}


async def test_fal_user_ids_admit_the_listed_users() -> None:
    verifier = signing.build_verifier(fal_settings(user_ids=["someone", FAL_USER_ID]), [])
    body = b'{"request_id": "r"}'
    verified = await verifier.verify(fal_headers(ED_KEYS[0], NOW, body), body, now=NOW)
    assert verified.scheme == "fal"


async def test_fal_user_ids_refuse_another_fal_customer_without_echoing_the_id() -> None:
    verifier = signing.build_verifier(fal_settings(user_ids=["our-fal-user"]), [])
    body = b'{"request_id": "r"}'
    with pytest.raises(SignatureInvalid) as caught:
        await verifier.verify(fal_headers(ED_KEYS[0], NOW, body), body, now=NOW)
    assert "X-Fal-Webhook-User-Id" in caught.value.message
    assert FAL_USER_ID not in caught.value.message


@pytest.mark.parametrize("bad", ["user-1", [""], [5], {"a": 1}])
def test_fal_user_ids_must_be_a_list_of_ids(bad: object) -> None:
    with pytest.raises(ConfigError, match="user_ids"):
        signing.build_verifier(fal_settings(user_ids=bad), [])


FAL_CONFIG = """
[server]
database = "sqlite:///{db}"

[sources.fal]
provider = "generic"
signature = {{ scheme = "fal", jwks = {{ keys = [{{ kty = "OKP", crv = "Ed25519", x = "{x}" }}] }}{extra} }}
"""  # noqa: E501 (one TOML inline table cannot be wrapped)


def fal_config(tmp: Path, extra: str = "") -> settings_mod.Settings:
    path = tmp / "fal.toml"
    path.write_text(FAL_CONFIG.format(db=tmp / "h.db", x=jwk(ED_KEYS[0])["x"], extra=extra))
    return settings_mod.load(str(path))


async def test_a_fal_webhook_from_another_user_is_a_401_naming_the_header(tmp_path: Path) -> None:
    import time

    config = fal_config(tmp_path, ', user_ids = ["our-fal-user"]')
    body = b'{"request_id": "r1", "status": "OK"}'
    headers = {
        "Content-Type": "application/json",
        **fal_headers(ED_KEYS[0], int(time.time()), body),
    }
    async with app_client(config) as (client, _):
        answer = await client.post("/hooks/fal", content=body, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == "signature_invalid"
    assert "X-Fal-Webhook-User-Id" in answer.json()["message"]
    assert FAL_USER_ID not in answer.text


def test_a_fal_source_without_user_ids_is_warned_about_at_start(tmp_path: Path) -> None:
    with capture_logs() as logs:
        create_app(fal_config(tmp_path))
        create_app(fal_config(tmp_path, ', user_ids = ["our-fal-user"]'))
    warnings = [entry for entry in logs if entry["event"] == "fal.any_user"]
    assert len(warnings) == 1 and warnings[0]["source"] == "fal"
    assert "user_ids" in warnings[0]["fix"]


# -- jsonl: an append is all or nothing ---------------------------------------------------------


def failing_write(fail_after: int) -> Any:
    """os.write that writes `fail_after` bytes of the first call and then fails as a full disk
    does; later calls fail at once."""
    real = os.write
    calls = 0

    def write(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1 and fail_after:
            return real(fd, bytes(data[:fail_after]))
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=200), before=st.integers(0, 3))
def test_a_failed_append_leaves_the_file_as_it_was(
    tmp_path_factory: pytest.TempPathFactory, cut: int, before: int
) -> None:
    path = tmp_path_factory.mktemp("jsonl") / "events.jsonl"
    sink = jsonl.JsonlSink(str(path))
    for n in range(before):
        sink._append(json.dumps({"n": n}).encode() + b"\n")
    original = path.read_bytes() if path.exists() else b""
    line = json.dumps({"n": "new", "pad": "x" * 150}).encode() + b"\n"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(jsonl.os, "write", failing_write(min(cut, len(line) - 1)))
        with pytest.raises(OSError):
            sink._append(line)
    assert path.read_bytes() == original
    sink._append(line)  # the retry, once there is room
    assert [json.loads(x) for x in path.read_bytes().splitlines()][-1]["n"] == "new"


async def test_a_full_disk_mid_write_is_a_retryable_error_and_the_retry_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    sink = jsonl.JsonlSink(str(path))
    await sink.send({"id": "evt_1"})
    monkeypatch.setattr(jsonl.os, "write", failing_write(7))
    with pytest.raises(Exception, match="cannot append"):
        await sink.send({"id": "evt_2", "raw": {"big": "y" * 1000}})
    monkeypatch.undo()
    await sink.send({"id": "evt_2", "raw": {"big": "y" * 1000}})
    await sink.aclose()
    assert [json.loads(x)["id"] for x in path.read_bytes().splitlines()] == ["evt_1", "evt_2"]


async def test_a_line_left_unfinished_by_someone_else_is_not_glued_to(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"id": "evt_0"}\n{"id": "evt_cut')  # e.g. a crash before this rule
    sink = jsonl.JsonlSink(str(path))
    await sink.send({"id": "evt_1"})
    await sink.aclose()
    assert path.read_bytes().splitlines()[-1] == b'{"id":"evt_1"}'


# -- connections that send nothing cannot starve the server -----------------------------------

FILE_LIMIT = 256  # the server's open-file limit in these tests (systemd's default is 1,024)


class LimitedServer(Server):
    """`hookyard serve` started under a low open-file limit (soft and hard)."""

    def start(self, timeout: float = 15.0) -> LimitedServer:
        real_popen = subprocess.Popen

        def popen(*args: Any, **kwargs: Any) -> Any:
            limit = (FILE_LIMIT, FILE_LIMIT)
            kwargs["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            return real_popen(*args, **kwargs)

        with pytest.MonkeyPatch.context() as m:
            m.setattr(subprocess, "Popen", popen)
            super().start(timeout)
        return self


@contextlib.contextmanager
def limited_server(tmp: Path, request_timeout_s: float = 2.0) -> Iterator[LimitedServer]:
    config = write_config(tmp)
    text = config.read_text().replace(
        "[server]\n", f"[server]\nrequest_timeout_s = {request_timeout_s}\n"
    )
    config.write_text(text)
    server = LimitedServer(config, tmp)
    try:
        yield server.start()
    finally:
        server.stop()


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes `sock` within `timeout` (EOF or reset)."""
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return False
    try:
        return sock.recv(4096) == b""
    except OSError:
        return True


def test_idle_connections_beyond_the_file_limit_do_not_stop_webhooks(tmp_path: Path) -> None:
    with limited_server(tmp_path) as server:
        config = settings_mod.load(str(server.config_path))
        idle = [
            socket.create_connection(("127.0.0.1", server.port)) for _ in range(FILE_LIMIT + 150)
        ]
        try:
            body = fixture("rendergrid", "completed.json")
            answer = post_signed(server.url, config, body, timeout=10)
            assert answer.status_code == 200, answer.text
            # Every idle socket is closed: evicted to make room, or at the request timeout.
            assert all(closed_by_peer(s, 10) for s in idle)
            metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        finally:
            for s in idle:
                s.close()
    assert 'hookyard_connections_refused_total{reason="idle_evicted"}' in metrics
    cap_lines = [line for line in server.output().splitlines() if "connections.closed" in line]
    assert cap_lines and "max_connections" in cap_lines[0]


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(tmp_path: Path) -> None:
    with limited_server(tmp_path, request_timeout_s=1.0) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as slow:
            slow.sendall(b"POST /hooks/rendergrid HTTP/1.1\r\nHost: x\r\n")
            # It keeps sending (each byte well within any per-read timeout) and is still cut off.
            deadline = time.monotonic() + 10
            closed = False
            while not closed and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    slow.sendall(b"X")
                closed = closed_by_peer(slow, 0.2)
            assert closed
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert 'hookyard_connections_refused_total{reason="request_timeout"}' in metrics


def test_the_connection_budget_keeps_files_for_the_database_and_outbound_calls() -> None:
    assert serving.connection_budget(1024, None) == 768
    assert serving.connection_budget(65536, None) == 49152
    assert serving.connection_budget(256, 100) == 100
    with pytest.raises(ConfigError, match="LimitNOFILE"):
        serving.connection_budget(256, 200)
    with pytest.raises(ConfigError, match="too low"):
        serving.connection_budget(100, None)


@pytest.mark.parametrize("unit", ["hookyard.service", "hookyard-worker.service"])
def test_the_systemd_units_raise_the_open_file_limit(unit: str) -> None:
    """systemd's default soft limit (1,024 files) is what ~1,100 idle connections exhausted."""
    text = (Path(__file__).parent.parent / "deploy" / unit).read_text()
    [line] = [s for s in text.splitlines() if s.startswith("LimitNOFILE=")]
    limit = int(line.removeprefix("LimitNOFILE="))
    assert serving.connection_budget(limit, None) >= 10_000


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("request_timeout_s = 0", "request_timeout_s must be at least 0.1"),
        ('request_timeout_s = "10"', "request_timeout_s must be a number"),
        ("max_connections = 0", "max_connections"),
        ("max_connections = 1.5", "max_connections must be a whole number"),
    ],
)
def test_connection_settings_are_validated(tmp_path: Path, line: str, message: str) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("[server]\n", f"[server]\n{line}\n"))
    with pytest.raises(ConfigError, match=message):
        settings_mod.load(str(config))


def test_connection_settings_defaults(tmp_path: Path) -> None:
    server = settings_mod.load(str(write_config(tmp_path))).server
    assert server.request_timeout_s == 10.0 and server.max_connections is None


def test_long_running_commands_collect_garbage_rarely_and_not_their_start_up() -> None:
    # In a process of its own: freezing and thresholds are process-wide.
    script = (
        "import gc, json\n"
        "from receiver import serving\n"
        "before = gc.get_threshold()\n"
        "serving.tune_gc()\n"
        "print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=60, check=True)
    before, after, frozen = json.loads(done.stdout)
    assert tuple(after) == serving.GC_THRESHOLDS != tuple(before)
    assert frozen > 10_000  # the modules, config and classes of start-up
