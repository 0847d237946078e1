"""The delivery client: capped answers, an overall deadline, failures as PostFailed."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from receiver.core.http import Answer
from receiver.core.poster import Poster, PostFailed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that answers with whatever `handler` writes."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return await reader.readexactly(length)


async def post_once(handler: Handler, body: bytes = b"{}", headers: dict[str, str] | None = None,
                    limit: int = 4096) -> Answer:
    """One POST through a fresh Poster to a server answering with `handler`."""
    poster = Poster(2)
    try:
        async with raw_server(handler) as url:
            return await poster.post(url, body, headers or {}, limit=limit, deadline_s=10)
    finally:
        await poster.aclose()


async def test_a_small_answer_is_read_whole() -> None:
    got: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await read_request(reader))
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok")
        await writer.drain()

    answer = await post_once(handler, b'{"x":1}', {"Content-Type": "application/json"}, limit=100)
    assert (answer.status, answer.body, answer.truncated) == (201, b"ok", False)
    assert answer.headers["x-a"] == "b"
    assert got == [b'{"x":1}']


async def test_an_endless_answer_is_cut_at_the_cap() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            while True:  # a megabyte a chunk, forever
                writer.write(b"100000\r\n" + b"x" * 0x100000 + b"\r\n")
                await writer.drain()

    answer = await post_once(handler)
    assert answer.status == 500 and answer.truncated and len(answer.body) == 4096


@pytest.mark.parametrize("size", [0, 4096, 4097, 100_000])
async def test_an_answer_of_declared_length_is_read_to_its_end_or_the_cap(size: int) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"y" * size)
        await writer.drain()

    answer = await post_once(handler)
    assert answer.body == b"y" * min(size, 4096)
    assert answer.truncated == (size > 4096)


async def test_a_dripping_answer_ends_at_the_deadline() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(1000):  # one byte every half second: each read is quick
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.5)

    poster = Poster(4)
    try:
        async with raw_server(handler) as url:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await poster.post(url, b"{}", {}, limit=4096, deadline_s=1.5)
            assert loop.time() - started < 30  # ended by our deadline, not by the peer
    finally:
        await poster.aclose()


async def test_a_refused_connection_is_post_failed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        poster = Poster(1)
        try:
            with pytest.raises(PostFailed, match="Connect"):
                await poster.post(f"http://127.0.0.1:{port}/", b"{}", {}, limit=10,
                                  deadline_s=5)
        finally:
            await poster.aclose()


async def test_a_failure_says_why_without_the_url_and_its_credentials() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        poster = Poster(1)
        try:
            with pytest.raises(PostFailed) as caught:
                await poster.post(f"http://user:s3cret-pw@127.0.0.1:{port}/x?token=t0ken", b"{}",
                                  {}, limit=10, deadline_s=5)
        finally:
            await poster.aclose()
    message = str(caught.value)
    assert message.startswith("ConnectError: ") and "(Connect)" in message
    assert "s3cret-pw" not in message and "t0ken" not in message and str(port) not in message


async def test_a_reused_connection_the_server_closed_is_retried_on_a_fresh_one() -> None:
    """The keep-alive race: the server drops an idle connection just as the next POST goes out
    on it. That POST is sent again on a new connection; it is not a failed attempt."""
    seen: list[tuple[int, bytes]] = []  # (connection number, body)
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        for served in range(2):
            seen.append((number, await read_request(reader)))
            if served:  # a second request on this connection: close it unanswered
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    poster = Poster(1)
    try:
        async with raw_server(handler) as url:
            first = await poster.post(url, b"1", {}, limit=10, deadline_s=5)
            second = await poster.post(url, b"2", {}, limit=10, deadline_s=5)
    finally:
        await poster.aclose()
    assert (first.status, second.status) == (200, 200)
    assert seen == [(1, b"1"), (1, b"2"), (2, b"2")]


async def test_a_connection_closed_unanswered_twice_is_post_failed_after_one_resend() -> None:
    """A server that takes the request and closes without an answer gets it once more (on a
    kept-alive connection that is the keep-alive race), then the attempt fails, saying why."""
    bodies: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        bodies.append(await read_request(reader))  # then close, never answering

    poster = Poster(1)
    try:
        async with raw_server(handler) as url:
            with pytest.raises(PostFailed, match="connection closed before message completed"):
                await poster.post(url, b"x", {}, limit=10, deadline_s=5)
    finally:
        await poster.aclose()
    assert bodies == [b"x", b"x"]
