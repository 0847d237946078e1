"""End to end: a real `hookyard serve` on 127.0.0.1, real signed requests, a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from receiver import settings as settings_mod
from tests.support import (
    RENDERFUL_SECRET,
    RENDERGRID_SECRET,
    WHSEC,
    Server,
    all_events,
    fixture,
    signed_headers,
    write_config,
)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def server(config_path: Path, tmp_path: Path) -> Iterator[Server]:
    srv = Server(config_path, tmp_path).start()
    yield srv
    srv.kill()


def creation(i: int, status: str = "completed") -> bytes:
    return json.dumps(
        {
            "event": f"creation.{status}",
            "id": f"job-{i:06d}",
            "status": status,
            "result_urls": [f"https://cdn.example/{i}.jpg"],
            "cost": 0.1,
        }
    ).encode()


def stored_ids(db: Path) -> set[str]:
    return {event["id"] for event in all_events(db)}


def test_signed_webhooks_from_each_provider_are_stored(
    server: Server, config_path: Path, tmp_path: Path
) -> None:
    config = settings_mod.load(str(config_path))
    sent = {
        "rendergrid": fixture("rendergrid", "completed.json"),
        "renderful": fixture("renderful", "completed_nested.json"),
        "replicate": fixture("generic", "replicate_prediction.json"),
    }
    ids = {}
    with httpx.Client(base_url=server.url) as client:
        for source, body in sent.items():
            r = client.post(
                f"/hooks/{source}", content=body, headers=signed_headers(config, source, body)
            )
            assert r.status_code == 200, r.text
            ids[source] = r.json()["event_id"]
    rows = {event["id"]: event["type"] for event in all_events(tmp_path / "hookyard.db")}
    assert rows == {
        ids["rendergrid"]: "generation.completed",
        ids["renderful"]: "generation.completed",
        ids["replicate"]: "webhook.received",
    }


async def _send_all(
    url: str,
    config: settings_mod.Settings,
    bodies: list[bytes],
    acked: list[str],
    concurrency: int = 32,
) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            try:
                r = await client.post(
                    "/hooks/rendergrid",
                    content=body,
                    headers=signed_headers(config, "rendergrid", body),
                )
            except httpx.HTTPError:
                continue  # the server died under us: this one was never acknowledged
            if r.status_code == 200:
                acked.append(r.json()["event_id"])

    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))


def test_sigkill_mid_stream_loses_no_acknowledged_event(config_path: Path, tmp_path: Path) -> None:
    """Webhooks stream in; the server is SIGKILLed while requests are in flight. Every event
    that got a 200 must be there after a restart."""
    config = settings_mod.load(str(config_path))
    server = Server(config_path, tmp_path).start()
    acked: list[str] = []
    bodies = [creation(i) for i in range(3000)]
    sender = threading.Thread(
        target=asyncio.run, args=(_send_all(server.url, config, bodies, acked),)
    )
    sender.start()
    while len(acked) < 200 and sender.is_alive():
        threading.Event().wait(0.01)
    server.kill()  # mid-stream: requests are in flight right now
    sender.join(60)
    assert 200 <= len(acked) < len(bodies), "the kill should land mid-stream"

    restarted = Server(config_path, tmp_path).start()  # reopens and recovers the WAL
    try:
        stored = stored_ids(tmp_path / "hookyard.db")
    finally:
        restarted.kill()
    assert set(acked) <= stored
    assert len(set(acked)) == len(acked)


def test_sigkill_right_after_acks_loses_nothing(
    server: Server, config_path: Path, tmp_path: Path
) -> None:
    config = settings_mod.load(str(config_path))
    acked: list[str] = []
    asyncio.run(_send_all(server.url, config, [creation(i) for i in range(300)], acked))
    server.kill()
    assert len(acked) == 300
    assert set(acked) <= stored_ids(tmp_path / "hookyard.db")


def test_sigterm_is_graceful(server: Server, config_path: Path, tmp_path: Path) -> None:
    config = settings_mod.load(str(config_path))
    acked: list[str] = []
    asyncio.run(_send_all(server.url, config, [creation(i) for i in range(50)], acked))
    # uvicorn re-raises the caught SIGTERM after its graceful shutdown, hence -15.
    assert server.stop() in (0, -15)
    assert "hookyard.stopped" in server.output()
    assert set(acked) <= stored_ids(tmp_path / "hookyard.db")


def test_ctrl_c_stops_serve_cleanly_without_a_traceback(server: Server) -> None:
    """The README's way to stop command 1: SIGINT (Ctrl-C). uvicorn shuts down gracefully,
    then re-raises the signal; serve ends there with status 0, not a KeyboardInterrupt
    traceback."""
    assert server.proc is not None
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(20) == 0
    output = server.output()
    assert "hookyard.stopped" in output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output


def test_logs_never_contain_secrets_or_signatures(server: Server, config_path: Path) -> None:
    config = settings_mod.load(str(config_path))
    body = fixture("rendergrid", "completed.json")
    good = signed_headers(config, "rendergrid", body)
    sent_signatures = [good["X-Webhook-Signature-256"]]
    with httpx.Client(base_url=server.url) as client:
        client.post("/hooks/rendergrid", content=body, headers=good)
        # Secrets sent where they do not belong must not be echoed into the logs either.
        for value in (RENDERGRID_SECRET, WHSEC, "sha256=" + "ab" * 32):
            bad = {**good, "X-Webhook-Signature-256": value, "Authorization": f"Bearer {value}"}
            assert client.post("/hooks/rendergrid", content=body, headers=bad).status_code == 401
            sent_signatures.append(value)
        client.post(
            "/hooks/replicate", content=body, headers=signed_headers(config, "replicate", body)
        )
    server.kill()
    logs = server.output()
    assert "webhook.accepted" in logs and "request.refused" in logs
    for secret in (RENDERGRID_SECRET, RENDERFUL_SECRET, WHSEC, *sent_signatures):
        assert secret not in logs
    for line in logs.splitlines():
        if line.startswith("{"):
            assert "request_id" in json.loads(line) or "event" in json.loads(line)


def test_sign_command_output_makes_a_valid_request(
    server: Server, config_path: Path, tmp_path: Path
) -> None:
    body_file = tmp_path / "body.json"
    body_file.write_bytes(fixture("rendergrid", "completed.json"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "receiver.cli",
            "sign",
            "--config",
            str(config_path),
            "--source",
            "rendergrid",
            "--body-file",
            str(body_file),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    headers = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert headers["Content-Type"] == "application/json"
    r = httpx.post(
        f"{server.url}/hooks/rendergrid", content=body_file.read_bytes(), headers=headers
    )
    assert r.status_code == 200 and r.json()["duplicate"] is False


def test_giant_and_duplicate_headers_are_refused_cleanly(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        giant = client.post(
            "/hooks/rendergrid",
            content=b"{}",
            headers={
                "Content-Type": "application/json",
                "X-Webhook-Signature-256": "sha256=" + "a" * 60000,
            },
        )
        dup = client.post(
            "/hooks/rendergrid",
            content=b"{}",
            headers=[
                ("Content-Type", "application/json"),
                ("X-Timestamp", "1"),
                ("X-Timestamp", "2"),
                ("X-Webhook-Signature-256", "sha256=00"),
            ],
        )
        assert client.get("/healthz").status_code == 200
    assert 400 <= giant.status_code < 500
    assert dup.status_code == 401
