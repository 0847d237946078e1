"""`POST /hooks/{source}`: one test per row of DESIGN.md's status table, plus health checks."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from receiver.store.sqlite import SqliteStore
from tests.support import (
    RENDERGRID_SECRET,
    App,
    Signed,
    app_client,
    fixture,
    load,
    signed_headers,
    stored_counts,
)

COMPLETED = fixture("rendergrid", "completed.json")


async def test_verified_new_event_is_stored_before_200(app: App, signed: Signed) -> None:
    client, service = app
    r = await client.post(
        "/hooks/rendergrid", content=COMPLETED, headers=signed("rendergrid", COMPLETED)
    )
    assert r.status_code == 200
    body = r.json()
    assert body["duplicate"] is False and body["event_id"].startswith("evt_")
    event = await service.store.get_event(body["event_id"])
    assert event is not None
    assert event["type"] == "generation.completed" and event["via"] == "webhook"
    assert event["raw"] == json.loads(COMPLETED)
    # Two routes select sinks; "log" appears in both and still gets one row.
    assert sorted(d["sink"] for d in event["deliveries"]) == ["log", "other"]
    assert {d["status"] for d in event["deliveries"]} == {"pending"}


async def test_duplicate_returns_first_id_and_creates_no_deliveries(tmp_path: Path) -> None:
    config = load(tmp_path)
    async with app_client(config) as (client, _):
        first = await client.post(
            "/hooks/rendergrid",
            content=COMPLETED,
            headers=signed_headers(config, "rendergrid", COMPLETED),
        )
        # A redelivery: new timestamp, new signature, new X-Webhook-Delivery-ID, same creation.
        again = await client.post(
            "/hooks/rendergrid",
            content=COMPLETED,
            headers={
                **signed_headers(config, "rendergrid", COMPLETED),
                "X-Webhook-Delivery-ID": "other",
            },
        )
    assert again.status_code == 200
    assert again.json() == {"event_id": first.json()["event_id"], "duplicate": True}
    assert await stored_counts(tmp_path / "hookyard.db") == (1, 2)


async def test_verified_but_unexpected_body_is_stored_as_unrecognized(tmp_path: Path) -> None:
    config = load(tmp_path)
    body = b'{"hello": "this is not a creation"}'
    async with app_client(config) as (client, service):
        r = await client.post(
            "/hooks/rendergrid", content=body, headers=signed_headers(config, "rendergrid", body)
        )
        assert r.status_code == 200
        event = await service.store.get_event(r.json()["event_id"])
    assert event is not None
    assert event["type"] == "webhook.unrecognized" and event["raw"] == {
        "hello": "this is not a creation"
    }


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(
            lambda h: {k: v for k, v in h.items() if k != "X-Webhook-Signature-256"}, id="missing"
        ),
        pytest.param(lambda h: {**h, "X-Webhook-Signature-256": "sha256=" + "0" * 64}, id="wrong"),
        pytest.param(lambda h: {**h, "X-Webhook-Signature-256": "sha256=zz%%"}, id="malformed"),
        pytest.param(lambda h: {**h, "X-Timestamp": "1000000000"}, id="outside-window"),
    ],
)
async def test_bad_signature_is_401_and_stores_nothing(tmp_path: Path, mangle) -> None:  # type: ignore[no-untyped-def]
    config = load(tmp_path)
    async with app_client(config) as (client, _):
        r = await client.post(
            "/hooks/rendergrid",
            content=COMPLETED,
            headers=mangle(signed_headers(config, "rendergrid", COMPLETED)),
        )
    assert r.status_code == 401
    assert r.json()["error"] == "signature_invalid"
    assert RENDERGRID_SECRET not in r.text
    assert (await stored_counts(tmp_path / "hookyard.db"))[0] == 0


async def test_body_not_json_is_400(tmp_path: Path) -> None:
    config = load(tmp_path)
    body = b'{"id": "c0ea", "status": '
    async with app_client(config) as (client, _):
        r = await client.post(
            "/hooks/rendergrid", content=body, headers=signed_headers(config, "rendergrid", body)
        )
    assert r.status_code == 400
    assert r.json()["error"] == "payload_invalid"


async def test_unknown_source_is_404(app: App) -> None:
    client, _ = app
    r = await client.post(
        "/hooks/nosuch", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    assert "nosuch" in r.json()["message"]


async def test_wrong_method_is_405(app: App) -> None:
    client, _ = app
    r = await client.get("/hooks/rendergrid")
    assert r.status_code == 405
    assert r.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_wrong_content_type_is_415(tmp_path: Path, content_type: str | None) -> None:
    config = load(tmp_path)
    headers = signed_headers(config, "rendergrid", COMPLETED)
    del headers["Content-Type"]
    if content_type:
        headers["Content-Type"] = content_type
    async with app_client(config) as (client, _):
        r = await client.post("/hooks/rendergrid", content=COMPLETED, headers=headers)
    assert r.status_code == 415
    assert "application/json" in r.json()["message"]


async def test_json_content_type_with_charset_is_accepted(tmp_path: Path) -> None:
    config = load(tmp_path)
    headers = {
        **signed_headers(config, "rendergrid", COMPLETED),
        "Content-Type": "application/json; charset=utf-8",
    }
    async with app_client(config) as (client, _):
        r = await client.post("/hooks/rendergrid", content=COMPLETED, headers=headers)
    assert r.status_code == 200


async def test_body_over_cap_is_413_by_content_length(tmp_path: Path) -> None:
    config = load(tmp_path, max_body_bytes=100)
    body = b'{"pad": "' + b"x" * 200 + b'"}'
    async with app_client(config) as (client, _):
        r = await client.post(
            "/hooks/rendergrid", content=body, headers=signed_headers(config, "rendergrid", body)
        )
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"


async def test_body_over_cap_is_413_while_streaming(tmp_path: Path) -> None:
    """No Content-Length (chunked): the cap is enforced as the chunks arrive."""
    config = load(tmp_path, max_body_bytes=100)
    chunks_sent = []

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(1000):
            chunks_sent.append(1)
            yield b"x" * 64

    async with app_client(config) as (client, _):
        r = await client.post(
            "/hooks/rendergrid", content=chunks(), headers=signed_headers(config, "rendergrid", b"")
        )
    assert r.status_code == 413
    assert len(chunks_sent) < 1000  # it stopped reading


async def test_store_unavailable_is_503_and_the_retry_succeeds(tmp_path: Path) -> None:
    config = load(tmp_path)
    store = SqliteStore(str(tmp_path / "hookyard.db"), busy_timeout_ms=50)
    async with app_client(config, store) as (client, _):
        # SQL on purpose: the test is about the file being locked by another writer.
        blocker = sqlite3.connect(tmp_path / "hookyard.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the lock
        try:
            r = await client.post(
                "/hooks/rendergrid",
                content=COMPLETED,
                headers=signed_headers(config, "rendergrid", COMPLETED),
            )
            assert r.status_code == 503
            assert r.json()["error"] == "store_unavailable"
            ready = await client.get("/readyz")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        retry = await client.post(
            "/hooks/rendergrid",
            content=COMPLETED,
            headers=signed_headers(config, "rendergrid", COMPLETED),
        )
    # Reads still work under a write lock (WAL), but readiness means "a webhook would be stored"
    assert ready.status_code == 503 and "cannot take a write" in ready.text
    assert retry.status_code == 200 and retry.json()["duplicate"] is False


async def test_health_and_readiness(app: App) -> None:
    client, _ = app
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


async def test_readyz_is_503_when_the_writer_stopped(app: App) -> None:
    client, service = app
    await service.ingest.stop()
    ready = await client.get("/readyz")
    r = await client.post(
        "/hooks/rendergrid",
        content=COMPLETED,
        headers=signed_headers(service.settings, "rendergrid", COMPLETED),
    )
    await service.ingest.start()  # let the lifespan stop it again cleanly
    assert ready.status_code == 503
    assert r.status_code == 503


async def test_every_answer_carries_a_request_id(app: App) -> None:
    client, _ = app
    mine = await client.get("/healthz", headers={"X-Request-Id": "req-abc_123"})
    theirs = await client.get("/healthz", headers={"X-Request-Id": 'bad id"<>'})
    assert mine.headers["x-request-id"] == "req-abc_123"
    assert (
        theirs.headers["x-request-id"] != 'bad id"<>' and len(theirs.headers["x-request-id"]) == 16
    )


async def test_non_terminal_after_terminal_is_stored_but_routed_nowhere(tmp_path: Path) -> None:
    config = load(tmp_path)
    late = json.dumps({"id": json.loads(COMPLETED)["id"], "status": "processing"}).encode()
    async with app_client(config) as (client, service):
        await client.post(
            "/hooks/rendergrid",
            content=COMPLETED,
            headers=signed_headers(config, "rendergrid", COMPLETED),
        )
        r = await client.post(
            "/hooks/rendergrid", content=late, headers=signed_headers(config, "rendergrid", late)
        )
        event = await service.store.get_event(r.json()["event_id"])
    assert r.status_code == 200 and r.json()["duplicate"] is False
    assert event is not None and event["type"] == "generation.processing"
    assert event["deliveries"] == []


async def test_concurrent_requests_share_commits(tmp_path: Path) -> None:
    """Many requests in flight at once: every one is stored, in fewer commits than requests."""
    import asyncio

    config = load(tmp_path)
    bodies = [
        json.dumps({"id": f"job-{i}", "status": "completed", "result_urls": []}).encode()
        for i in range(200)
    ]
    async with app_client(config) as (client, service):
        commits = 0
        original = service.store.write_events

        async def counting(items):  # type: ignore[no-untyped-def]
            nonlocal commits
            commits += 1
            return await original(items)

        service.store.write_events = counting  # type: ignore[method-assign]
        answers = await asyncio.gather(
            *[
                client.post(
                    "/hooks/rendergrid", content=b, headers=signed_headers(config, "rendergrid", b)
                )
                for b in bodies
            ]
        )
    assert [a.status_code for a in answers] == [200] * 200
    assert (await stored_counts(tmp_path / "hookyard.db"))[0] == 200
    assert commits < 200


def test_http_client_sees_json_errors_for_unknown_paths(tmp_path: Path) -> None:
    """Unknown paths answer JSON too, so a misconfigured provider gets a readable error."""
    import asyncio

    async def go() -> httpx.Response:
        async with app_client(load(tmp_path)) as (client, _):
            return await client.get("/nope")

    r = asyncio.run(go())
    assert r.status_code == 404 and r.json()["error"] == "not_found"
