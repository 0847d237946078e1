"""The http sink against a fake receiver (signature checked by an independent verifier) and
the jsonl sink on disk."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from handlers.sinks import http as http_sink
from handlers.sinks import jsonl
from handlers.sinks.base import SinkContext, SinkError
from receiver.settings import SinkSettings
from tests import support
from tests.fakes import FakeSink, Recorded, Reply, free_port
from tests.support import WHSEC

SECRET = WHSEC
# Unicode in the model: the body must go out as UTF-8, byte for byte.
make_event = functools.partial(
    support.make_event, outputs=["https://cdn.example.com/a.png"], model="flüx ✨"
)


# -- an independent Standard Webhooks verifier (from the spec, not receiver.signing) ---------


def standard_webhooks_valid(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """HMAC-SHA256 over `{id}.{timestamp}.{body}`, key = base64-decoded `whsec_` secret;
    `webhook-signature` is a space-separated list of `v1,<base64>`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    candidates = [s.partition(",") for s in headers["webhook-signature"].split()]
    return any(v == "v1" and hmac.compare_digest(sig, expected) for v, _, sig in candidates)


def test_the_independent_verifier_matches_the_published_example() -> None:
    # The example from the Standard Webhooks / Svix documentation.
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    assert standard_webhooks_valid(SECRET, headers, b'{"test": 2432232314}')
    assert not standard_webhooks_valid(SECRET, headers, b'{"test": 2432232315}')


# -- the http sink ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[FakeSink]:
    with FakeSink(default=Reply(200, "thanks")) as server:
        yield server


def make_sink(http: httpx.AsyncClient, url: str, timeout_s: float = 5.0,
              **options: Any) -> http_sink.HttpSink:
    ctx = SinkContext(http=http, timeout_s=timeout_s)
    return http_sink.create("backend", {"url": url, **options}, ctx)


async def deliver(receiver: FakeSink, http: httpx.AsyncClient, event: Mapping[str, Any],
                  **options: Any) -> Recorded:
    receiver.clear()
    sink = make_sink(http, f"{receiver.url}/render-events", **options)
    assert await sink.send(event) == 200
    await sink.aclose()
    [request] = receiver.requests
    return request


async def test_posts_the_event_json(receiver: FakeSink, http: httpx.AsyncClient) -> None:
    event = make_event()
    request = await deliver(receiver, http, event, secret=SECRET)
    assert request.method == "POST" and request.path == "/render-events"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == event


async def test_the_signature_verifies_independently(receiver: FakeSink,
                                                    http: httpx.AsyncClient) -> None:
    event = make_event()
    request = await deliver(receiver, http, event, secret=SECRET)
    assert standard_webhooks_valid(SECRET, request.headers, request.body)
    assert request.headers["webhook-id"] == event["id"]
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert not standard_webhooks_valid(SECRET, request.headers, request.body + b" ")
    other = "whsec_" + base64.b64encode(b"another secret entirely!").decode()
    assert not standard_webhooks_valid(other, request.headers, request.body)


async def test_extra_headers_are_sent(receiver: FakeSink, http: httpx.AsyncClient) -> None:
    request = await deliver(receiver, http, make_event(), secret=SECRET,
                            headers={"X-Team": "renders", "Authorization": "Bearer abc"})
    assert request.headers["x-team"] == "renders"
    assert request.headers["authorization"] == "Bearer abc"
    assert standard_webhooks_valid(SECRET, request.headers, request.body)


async def test_without_a_secret_nothing_is_signed(receiver: FakeSink,
                                                  http: httpx.AsyncClient) -> None:
    request = await deliver(receiver, http, make_event())
    assert "webhook-signature" not in request.headers
    assert request.json() == make_event()


@pytest.mark.parametrize(
    ("reply", "permanent", "retry_after"),
    [
        (Reply(500, "oops"), False, None),
        (Reply(503, "", {"Retry-After": "30"}), False, 30.0),
        (Reply(429, "slow down", {"Retry-After": "12"}), False, 12.0),
        (Reply(408, ""), False, None),
        (Reply(400, "bad"), True, None),
        (Reply(401, "who are you"), True, None),
        (Reply(404, ""), True, None),
        (Reply(410, "gone", {"Retry-After": "5"}), True, None),
    ],
)
async def test_status_classification(receiver: FakeSink, http: httpx.AsyncClient,
                                     reply: Reply, permanent: bool,
                                     retry_after: float | None) -> None:
    receiver.clear()
    receiver.script(reply)
    with pytest.raises(SinkError) as caught:
        await make_sink(http, f"{receiver.url}/x", secret=SECRET).send(make_event())
    assert caught.value.permanent is permanent
    assert caught.value.status_code == reply.status
    assert caught.value.retry_after_s == retry_after
    assert SECRET not in caught.value.message


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_any_2xx_is_delivered(receiver: FakeSink, http: httpx.AsyncClient,
                                    status: int) -> None:
    receiver.script(Reply(status, ""))
    assert await make_sink(http, f"{receiver.url}/x").send(make_event()) == status


async def test_connection_refused_is_transient(http: httpx.AsyncClient) -> None:
    with pytest.raises(SinkError) as caught:
        await make_sink(http, f"http://127.0.0.1:{free_port()}/x").send(make_event())
    assert not caught.value.permanent and caught.value.status_code is None
    assert "ConnectError" in caught.value.message


async def test_a_hanging_receiver_times_out_transiently(receiver: FakeSink,
                                                        http: httpx.AsyncClient) -> None:
    receiver.script(Reply(200, "late", delay_s=3))
    with pytest.raises(SinkError) as caught:
        await make_sink(http, f"{receiver.url}/x", timeout_s=0.2).send(make_event())
    assert not caught.value.permanent
    assert "Timeout" in caught.value.message


# -- the jsonl sink --------------------------------------------------------------------------


def jsonl_sink(path: Path) -> jsonl.JsonlSink:
    settings = SinkSettings(name="log", type="jsonl", options={"path": str(path)})
    return jsonl.create(settings.name, settings.options, SinkContext(http=None, timeout_s=1))  # type: ignore[arg-type]


async def test_jsonl_appends_lines_that_parse_back(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "events.jsonl"
    sink = jsonl_sink(path)
    events = [make_event(n) for n in range(3)]
    for event in events:
        assert await sink.send(event) is None
    await sink.send(events[0])  # a replay appends again
    await sink.aclose()
    lines = path.read_bytes().splitlines()
    assert [json.loads(line) for line in lines] == [*events, events[0]]
    assert "flüx ✨" in path.read_text(encoding="utf-8")


async def test_jsonl_concurrent_sends_do_not_interleave(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = jsonl_sink(path)
    events = [make_event(n, raw={"blob": str(n) * 200_000}) for n in range(24)]
    await asyncio.gather(*(sink.send(event) for event in events))
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]
    assert sorted(parsed, key=lambda e: e["id"]) == events


async def test_jsonl_unwritable_path_is_a_sink_error(tmp_path: Path) -> None:
    with pytest.raises(SinkError) as caught:
        await jsonl_sink(tmp_path).send(make_event())  # a directory, not a file
    assert "cannot append" in caught.value.message
