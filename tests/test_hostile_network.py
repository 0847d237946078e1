"""A hostile world: peers that answer endlessly, hugely or one byte at a time, outputs that
fail, crawl or are not images, and event text that tries to break out of Slack's markup.

Every outbound read is capped in size and bounded in time as a whole (DESIGN.md "Security"),
and S3 mirroring finishes however many or large the outputs are. Real servers on 127.0.0.1
(uvicorn, moto's S3) stand in for the world; nothing here reaches the internet.
"""

from __future__ import annotations

import asyncio
import re
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.sinks import http as http_sink
from handlers.sinks import s3, slack
from handlers.sinks.base import SinkContext, SinkError, send_budget_s
from receiver import settings as settings_mod
from receiver.core import events, signing
from receiver.core.errors import SignatureInvalid
from receiver.core.http import EXCERPT_BYTES
from receiver.core.outputs import Sent
from receiver.delivery import Delivery
from receiver.store import NewEvent
from receiver.store.sqlite import SqliteStore
from tests.fakes import PNG_BYTES, AsgiServer, FileServer, MotoS3, Reply
from tests.test_sink_s3 import EVENT_KEY, OUTPUT_DIR, compact, get_object, keys, make_event

MB = 1024 * 1024
CHUNK = b"x" * (64 * 1024)
GUARD_S = 30.0  # an outer bound so a regression fails the test instead of hanging the suite
MEMORY_BOUND = 50 * MB

Send = Callable[[], Awaitable[Any]]


def gzip_bomb(megabytes: int) -> Iterator[bytes]:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    block = b"x" * MB
    for _ in range(megabytes):
        yield deflater.compress(block)
    yield deflater.flush()


# -- a hostile server --------------------------------------------------------------------------


class HostileServer(AsgiServer):
    """Answers `/{kind}/{status}` with a body that is a problem:

    * `endless` — 64 KiB chunks, no Content-Length, until the client hangs up;
    * `huge` — a declared and streamed 300 MB;
    * `drip` — one byte a second, for a minute;
    * `slow` — `/slow/{status}?chunks=N`: N chunks of 256 KiB of image/png, 0.5 s apart;
    * `bomb` — 200 MB of `x` as a ~200 KB gzip body (`Content-Encoding: gzip`, image/png).
    """

    BOMB = b"".join(gzip_bomb(200))

    def __init__(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:  # uvicorn wants a function
            await self.serve(scope, receive, send)

        super().__init__(app)
        self.hits: list[str] = []

    async def serve(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        _, kind, status = scope["path"].split("/")[:3]
        self.hits.append(scope["path"])
        gone = asyncio.Event()
        watcher = asyncio.create_task(self.watch(receive, gone))
        try:
            await self.answer(kind, int(status), scope["query_string"].decode(), send, gone)
        finally:
            watcher.cancel()

    @staticmethod
    async def watch(receive: Any, gone: asyncio.Event) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    async def answer(
        self, kind: str, status: int, query: str, send: Any, gone: asyncio.Event
    ) -> None:
        headers = [(b"content-type", b"text/plain")]
        if kind == "huge":
            headers.append((b"content-length", str(300 * MB).encode()))
        if kind in ("slow", "bomb"):
            headers = [(b"content-type", b"image/png")]
        if kind == "bomb":
            headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if kind == "slow":
            chunks = int(query.removeprefix("chunks="))
            for _ in range(chunks):
                await self.body(send, b"p" * (256 * 1024))
                await self.pause(0.5)
        elif kind == "bomb":
            for start in range(0, len(self.BOMB), len(CHUNK)):
                await self.body(send, self.BOMB[start : start + len(CHUNK)])
        elif kind == "drip":
            for _ in range(60):
                if gone.is_set() or self._stopping.is_set():
                    break
                await self.body(send, b"x")
                await self.pause(1.0)
        else:
            limit = 300 * MB if kind == "huge" else None
            sent = 0
            while not gone.is_set() and not self._stopping.is_set():
                if limit is not None and sent >= limit:
                    break
                await self.body(send, CHUNK)
                sent += len(CHUNK)
                await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def body(send: Any, data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


async def peak_memory(send: Send) -> tuple[Any, int]:
    """(what `send` returned or raised, the peak of traced memory while it ran), guarded."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        try:
            async with asyncio.timeout(GUARD_S):
                result: Any = await send()
        except SinkError as exc:
            result = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - base


def make_sink(kind: str, url: str, http: httpx.AsyncClient, timeout_s: float) -> Any:
    ctx = SinkContext(http=http, timeout_s=timeout_s)
    if kind == "http":
        return http_sink.HttpSink(url, ctx)
    return slack.SlackSink(url, ctx)


# -- sink answers: capped and deadline-bound ---------------------------------------------------


@pytest.mark.parametrize("sink_kind", ["http", "slack"])
@pytest.mark.parametrize("body", ["endless", "huge", "bomb"])
@pytest.mark.parametrize("status", [200, 500])
async def test_an_endless_or_huge_answer_is_read_only_to_the_cap(
    hostile: HostileServer, http: httpx.AsyncClient, sink_kind: str, body: str, status: int
) -> None:
    sink = make_sink(sink_kind, f"{hostile.url}/{body}/{status}", http, timeout_s=10)
    result, grew = await peak_memory(lambda: sink.send(make_event()))
    assert grew < MEMORY_BOUND, f"the send held {grew / MB:.0f} MB"
    if status == 200:
        assert result == 200
    else:
        assert isinstance(result, SinkError) and not result.permanent
        assert result.status_code == 500
        assert "xxxx" in result.message  # the capped excerpt
        assert len(result.message) < EXCERPT_BYTES


@pytest.mark.parametrize("sink_kind", ["http", "slack"])
async def test_a_dripping_answer_ends_at_the_sinks_deadline(
    hostile: HostileServer, http: httpx.AsyncClient, sink_kind: str
) -> None:
    sink = make_sink(sink_kind, f"{hostile.url}/drip/200", http, timeout_s=2)
    async with asyncio.timeout(GUARD_S):  # one byte a second would keep a per-read timeout alive
        with pytest.raises(SinkError) as caught:
            await sink.send(make_event())
    assert not caught.value.permanent  # a retry may find a better-behaved peer
    assert "timeout_s = 2" in caught.value.message
    assert hostile.url not in caught.value.message or sink_kind == "http"


# -- the JWKS fetch ----------------------------------------------------------------------------


class CountingTransport(httpx.AsyncBaseTransport):
    """A real transport that counts the body bytes the client actually took off the wire."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.read = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=CountingStream(response.stream, self),  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class CountingStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, counter: CountingTransport) -> None:
        self.inner, self.counter = inner, counter

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.counter.read += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


def fal_headers(now: int) -> dict[str, str]:
    """Well-formed fal headers; the signature never matters: the key fetch fails first."""
    return {
        "X-Fal-Webhook-Request-Id": "req-1",
        "X-Fal-Webhook-User-Id": "user-1",
        "X-Fal-Webhook-Timestamp": str(now),
        "X-Fal-Webhook-Signature": "00" * 64,
    }


@pytest.mark.parametrize("body", ["endless", "huge", "bomb"])
async def test_an_endless_jwks_is_refused_after_reading_at_most_the_cap(
    hostile: HostileServer, body: str
) -> None:
    transport = CountingTransport()
    verifier = signing.build_verifier(
        {"scheme": "fal", "jwks_url": f"{hostile.url}/{body}/200"},
        [],
        http_client_factory=lambda: httpx.AsyncClient(transport=transport),
    )
    now = int(time.time())
    async with asyncio.timeout(GUARD_S):
        with pytest.raises(SignatureInvalid, match="could not fetch the signing keys"):
            await verifier.verify(fal_headers(now), b"{}", now=now)
    assert transport.read <= signing.MAX_JWKS_BYTES + 2 * len(CHUNK)


async def test_a_dripping_jwks_ends_at_its_deadline(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signing, "JWKS_DEADLINE_S", 1.5)
    verifier = signing.build_verifier(
        {"scheme": "fal", "jwks_url": f"{hostile.url}/drip/200"}, [],
        http_client_factory=lambda: httpx.AsyncClient(timeout=5),
    )
    now = int(time.time())
    async with asyncio.timeout(GUARD_S):  # each byte comes well within the 5 s read timeout
        with pytest.raises(SignatureInvalid, match="could not fetch the signing keys"):
            await verifier.verify(fal_headers(now), b"{}", now=now)


@pytest.mark.parametrize("body", [b"[" * 60_000, b'{"keys": [' * 6_000, b"\xff\xfe{}"])
async def test_a_jwks_of_any_bytes_is_refused_not_a_crash(body: bytes) -> None:
    """The JWKS is JSON from outside, read by the one parser (receiver.core.jsonx): nesting
    deeper than it allows made Python's json raise RecursionError, a 500 for the webhook."""
    answer = httpx.MockTransport(lambda _: httpx.Response(200, content=body))
    verifier = signing.build_verifier(
        {"scheme": "fal", "jwks_url": "http://jwks.test/keys"}, [],
        http_client_factory=lambda: httpx.AsyncClient(transport=answer),
    )
    assert len(body) <= signing.MAX_JWKS_BYTES
    now = int(time.time())
    with pytest.raises(SignatureInvalid, match="could not fetch the signing keys"):
        await verifier.verify(fal_headers(now), b"{}", now=now)


# -- S3 mirroring that finishes ----------------------------------------------------------------




MakeS3 = Callable[..., s3.S3Sink]
MIRROR = {"mirror_outputs": True, "allow_private_networks": True}


def gets(files: FileServer, path: str) -> int:
    return sum(1 for r in files.requests if r.method == "GET" and r.path == path)


@pytest.mark.parametrize("status", [404, 500])
async def test_the_event_json_is_archived_although_an_output_fails(
    make_s3: MakeS3, moto: MotoS3, bucket: str, files: FileServer, status: int
) -> None:
    broken = files.route(f"/fails/{status}.png", Reply(status, "nope"))
    event = make_event(outputs=[broken, files.add_png(f"/fails/{status}-ok.png")])
    with pytest.raises(SinkError) as caught:
        await make_s3(**MIRROR).send(event)
    assert caught.value.status_code == status
    assert caught.value.permanent is (status == 404)
    assert "output 1 of 2" in caught.value.message
    assert get_object(moto, bucket, EVENT_KEY)[0] == compact(event)  # no mirrored_outputs yet
    assert keys(moto, bucket) == [EVENT_KEY, f"{OUTPUT_DIR}/1.png"]  # the good one is kept


async def test_a_retry_fetches_only_the_outputs_not_yet_mirrored(
    make_s3: MakeS3, moto: MotoS3, bucket: str, files: FileServer
) -> None:
    done = [files.add_png("/retry2/a.png"), files.add_jpg("/retry2/b.jpg")]
    flaky = files.route("/retry2/c.png", Reply(503, "busy"))
    event = make_event(outputs=[*done, flaky])
    sink = make_s3(**MIRROR)
    with pytest.raises(SinkError) as caught:
        await sink.send(event)
    assert not caught.value.permanent
    files.add_png("/retry2/c.png")  # the host recovers
    sent = await sink.send(event)
    assert isinstance(sent, Sent) and sent.status_code == 200
    assert [m.key for m in sent.mirrored] == [
        f"{OUTPUT_DIR}/0.png", f"{OUTPUT_DIR}/1.jpg", f"{OUTPUT_DIR}/2.png"]
    assert [gets(files, p) for p in ("/retry2/a.png", "/retry2/b.jpg", "/retry2/c.png")] == [
        1, 1, 2]
    mirrored = [f"{OUTPUT_DIR}/0.png", f"{OUTPUT_DIR}/1.jpg", f"{OUTPUT_DIR}/2.png"]
    archived = compact({**event, "mirrored_outputs": mirrored})
    assert get_object(moto, bucket, EVENT_KEY)[0] == archived


async def test_an_output_from_another_url_at_the_same_key_is_fetched_again(
    make_s3: MakeS3, moto: MotoS3, bucket: str, files: FileServer
) -> None:
    first = files.add_png("/moved/first.png")
    second = files.add("/moved/second.png", PNG_BYTES + b"\x00", "image/png")
    await make_s3(**MIRROR).send(make_event(outputs=[first]))
    await make_s3(**MIRROR).send(make_event(outputs=[second]))  # same job, same index, new content
    assert gets(files, "/moved/second.png") == 1
    assert get_object(moto, bucket, f"{OUTPUT_DIR}/0.png")[0] == PNG_BYTES + b"\x00"


async def test_a_dripping_output_fails_within_its_own_budget(
    make_s3: MakeS3, moto: MotoS3, bucket: str, hostile: HostileServer
) -> None:
    sink = make_s3(output_timeout_s=1.5, **MIRROR)
    async with asyncio.timeout(GUARD_S):
        with pytest.raises(SinkError) as caught:
            await sink.send(make_event(outputs=[f"{hostile.url}/drip/200"]))
    assert not caught.value.permanent and "output_timeout_s = 1.5" in caught.value.message
    assert keys(moto, bucket) == [EVENT_KEY]


async def test_a_compressed_output_is_inflated_only_up_to_the_cap(
    make_s3: MakeS3, moto: MotoS3, bucket: str, hostile: HostileServer
) -> None:
    sink = make_s3(max_output_bytes=MB, **MIRROR)
    result, grew = await peak_memory(
        lambda: sink.send(make_event(outputs=[f"{hostile.url}/bomb/200"]))
    )
    assert grew < MEMORY_BOUND, f"the mirror held {grew / MB:.0f} MB"
    assert isinstance(result, SinkError) and result.permanent
    assert "max_output_bytes" in result.message
    assert keys(moto, bucket) == [EVENT_KEY]


@pytest.mark.parametrize(
    ("content_type", "path", "stored", "ext"),
    [
        ("text/html; charset=utf-8", "/types/page.html", "application/octet-stream", "bin"),
        ("text/html", "/types/looks.png", "application/octet-stream", "bin"),
        ("image/svg+xml", "/types/vector.svg", "application/octet-stream", "bin"),
        ("application/json", "/types/data", "application/octet-stream", "bin"),
        ("application/octet-stream", "/types/render.webp", "application/octet-stream", "webp"),
        ("video/mp4", "/types/clip", "video/mp4", "mp4"),
        ("image/png", "/types/pic", "image/png", "png"),
    ],
)
async def test_only_image_and_video_types_are_stored_as_given(
    make_s3: MakeS3, moto: MotoS3, bucket: str, files: FileServer,
    content_type: str, path: str, stored: str, ext: str,
) -> None:
    url = files.add(path, b"<script>alert(1)</script>", content_type)
    await make_s3(**MIRROR).send(make_event(outputs=[url]))
    body, got_type, _ = get_object(moto, bucket, f"{OUTPUT_DIR}/0.{ext}")
    assert (body, got_type) == (b"<script>alert(1)</script>", stored)


async def test_the_budget_grows_with_the_outputs(http: httpx.AsyncClient, aws_env: None) -> None:
    def build(**options: Any) -> s3.S3Sink:
        return s3.create("a", {"bucket": "b", **options},
                         SinkContext(http=http, timeout_s=10))

    three = make_event(outputs=["https://x/1.png", "https://x/2.png", "https://x/3.png"])
    assert build(mirror_outputs=True).budget_s(three) == 10 + 3 * 60
    assert build(mirror_outputs=True, output_timeout_s=5).budget_s(three) == 25
    assert build(mirror_outputs=False).budget_s(three) == 10
    assert send_budget_s(build(mirror_outputs=True), three, 10) == 190
    assert send_budget_s(http_sink.HttpSink("http://x", SinkContext(http, 7)), three, 7) == 7


@pytest.mark.parametrize("value", [0, -1, "60", True, float("inf")])
def test_output_timeout_s_must_be_positive_seconds(tmp_path: Path, value: Any) -> None:
    shown = {True: "true", float("inf"): "inf"}.get(value, repr(value).replace("'", '"'))
    path = tmp_path / "h.toml"
    path.write_text(f'[sinks.a]\ntype = "s3"\nbucket = "b"\noutput_timeout_s = {shown}\n')
    with pytest.raises(Exception, match="output_timeout_s"):
        settings_mod.load(str(path))


def test_output_timeout_s_is_an_s3_key(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text('[sinks.a]\ntype = "s3"\nbucket = "b"\noutput_timeout_s = 2.5\n')
    assert settings_mod.load(str(path)).sinks["a"].options["output_timeout_s"] == 2.5


async def test_the_engine_gives_a_large_slow_output_its_own_budget(
    tmp_path: Path, moto: MotoS3, bucket: str, hostile: HostileServer
) -> None:
    """Four 256 KiB chunks half a second apart take ~2 s: longer than timeout_s = 1, which
    once bounded the whole event; output_timeout_s gives the output its own time."""
    config = tmp_path / "h.toml"
    config.write_text(
        f'[sinks.archive]\ntype = "s3"\nbucket = "{bucket}"\nendpoint_url = "{moto.endpoint_url}"\n'
        "mirror_outputs = true\nallow_private_networks = true\ntimeout_s = 1\n"
        "output_timeout_s = 20\nmax_attempts = 1\n"
    )
    settings = settings_mod.load(str(config))
    event = events.generation_event(
        source="rendergrid", provider="rendergrid", job_id="slow-job", status="completed",
        via="webhook", raw={}, outputs=[f"{hostile.url}/slow/200?chunks=4"],
    )
    store = SqliteStore(str(tmp_path / "h.db"))
    await store.open()
    delivery = Delivery(settings.sinks, store, grace_s=1)
    await delivery.start()
    try:
        items = [NewEvent(event, b"{}", {}, ("archive",))]
        delivery.events_stored(items, await store.write_events(items))
        async with asyncio.timeout(GUARD_S):
            while not (counts := await store.delivery_counts()).get(("archive", "delivered")):
                assert not counts.get(("archive", "dead")), await store.get_event(event.id)
                await asyncio.sleep(0.05)
    finally:
        await delivery.stop()
        await store.close()
    body, content_type, _ = get_object(moto, bucket, "outputs/rendergrid/slow-job/0.png")
    assert (len(body), content_type) == (4 * 256 * 1024, "image/png")


# -- Slack markup that cannot be broken out of -------------------------------------------------


def links_line(url: str) -> str:
    block = slack.links_block([url])
    return str(block["text"]["text"]).split("\n")[1]


def test_a_pipe_in_an_output_url_cannot_change_the_link_text() -> None:
    line = links_line("https://cdn.example.com/a.mp4?x=1|click here>now")
    assert line == "• <https://cdn.example.com/a.mp4?x=1%7Cclick%20here%3Enow|a.mp4>"


def test_backticks_in_an_error_stay_inside_its_code_block() -> None:
    block = slack.error_block("boom ```<!channel>``` `x` & more")
    text = block["text"]["text"]
    t = slack.BACKTICK_LOOKALIKE
    assert text == f"*Error*\n```boom {t * 3}&lt;!channel&gt;{t * 3} {t}x{t} &amp; more```"


_LINK_LINE = re.compile(r"• <([^|<>\s]+)\|([^<>|]*)>")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_output_url_makes_one_well_formed_link(url: str) -> None:
    assert _LINK_LINE.fullmatch(links_line("https://x.test/" + url))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2500))
def test_any_error_renders_inside_one_closed_code_block(error: str) -> None:
    text = slack.error_block(error)["text"]["text"]
    assert text.startswith("*Error*\n```") and text.endswith("```")
    inner = text[len("*Error*\n```") : -3]
    assert "`" not in inner and "<" not in inner and ">" not in inner
    assert not re.search(r"&[a-z]*$", inner.removesuffix("…"))  # no entity cut in half
    assert len(text) <= slack.SECTION_TEXT_CHARS


def test_an_output_url_urllib_cannot_split_still_makes_a_message() -> None:
    message = slack.build_message(make_event(outputs=["https://[oops/a.png", "http://[::1/x|y"]))
    links = message["blocks"][-2]["text"]["text"]
    assert "<https://[oops/a.png|https://[oops/a.png>" in links
    assert s3.extension(None, "https://[oops/a.png") == "bin"
