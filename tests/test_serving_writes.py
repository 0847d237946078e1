"""A response's writes go out together (serving.CoalescingTransport), and nothing is lost."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from receiver import serving
from tests.support import Server, write_config


class Recorded:
    """A transport that keeps what was written and whether it was closed."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.events.append("write")

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"


async def test_the_writes_of_one_turn_are_one_write_at_its_end() -> None:
    real = Recorded()
    transport = serving.CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"ok")
    assert real.writes == []  # held until the turn ends
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"next"]
    assert transport.get_extra_info("peername") == "extra:peername"  # the rest is the real one's


async def test_close_sends_what_is_held_first_and_a_closed_peer_takes_nothing() -> None:
    real = Recorded()
    transport = serving.CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"answer")
    transport.close()
    assert real.events == ["write", "close"] and real.writes == [b"answer"]
    transport.write(b"late")  # the connection is gone: dropped at the end of the turn
    await asyncio.sleep(0)
    assert real.writes == [b"answer"]


def test_a_real_server_answers_whole_on_kept_alive_and_closing_connections(
    tmp_path: Path,
) -> None:
    server = Server(write_config(tmp_path), tmp_path).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            for _ in range(3):  # kept alive: each answer arrives whole before the next request
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                head = _read_answer(conn)
                assert head.startswith(b"HTTP/1.1 200 ")
            # Connection: close: the answer is sent in full before the server closes.
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            rest = b""
            while chunk := conn.recv(65536):
                rest += chunk
        head, _, body = rest.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and len(body) == _length(head) > 0
    finally:
        server.stop()


def _read_answer(conn: socket.socket) -> bytes:
    """One answer with a Content-Length, read whole; its head."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = _length(head)
    while len(body) < length:
        body += conn.recv(65536)
    assert len(body) == length
    return head


def _length(head: bytes) -> int:
    return int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")))
