"""Fixed-rate load generator for the fan-out benchmark (its own process).

    python bench/delivery/loadgen.py URL CONFIG RATE SECONDS OUT [--connections 32]

Signs RATE x SECONDS unique Rendergrid creation webhooks up front (hookyard's own signing code,
the same bodies and headers as bench/ingest), then sends request i at t0 + i / RATE (open loop:
a late answer does not delay the next request's slot, as long as a connection is free) over
`--connections` keep-alive HTTP/1.1 connections. The client is a few lines of asyncio streams
(uvloop when installed), not httpx, so the generator takes as little CPU from the shared
2 cores as possible.

For every request it records the event id from hookyard's answer, the status, when the request
was written and when the whole answer was read (time.time(), the same clock as the sink's
arrival times). Writes them as JSON to OUT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.ingest.run import _body, _verifier  # noqa: E402


def build_requests(url: str, config: Path, count: int) -> tuple[str, int, list[bytes]]:
    import httpx

    verifier = _verifier(config)
    target = httpx.URL(url)
    host, port = target.host, int(target.port or 80)
    now = time.time()
    out = []
    for _ in range(count):
        body = _body(str(uuid.uuid4()))
        headers = {"Host": f"{host}:{port}", "Content-Type": "application/json",
                   **verifier.sign(body, now=now),
                   "X-Webhook-Event": "creation.completed",
                   "X-Webhook-Delivery-ID": str(uuid.uuid4()),
                   "Content-Length": str(len(body))}
        head = f"POST {target.raw_path.decode()} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        out.append(head.encode() + body)
    return host, port, out


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        elif name.strip().lower() == b"transfer-encoding":
            raise RuntimeError("chunked answers are not handled by this client")
    body = await reader.readexactly(length) if length else b""
    return status, body


async def run(host: str, port: int, requests: list[bytes], rate: float,
              connections: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    results: list[list[Any]] = []
    errors: list[str] = []
    next_index = 0
    t0 = loop.time() + 0.2
    wall0 = time.time() + 0.2

    async def worker() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_index < len(requests):
                i = next_index
                next_index += 1
                delay = t0 + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = time.time()
                writer.write(requests[i])
                status, body = await _read_answer(reader)
                done = time.time()
                event_id = None
                if status == 200:
                    event_id = json.loads(body)["event_id"]
                results.append([i, status, event_id, sent, done])
        except Exception as exc:  # report, do not hide
            errors.append(repr(exc))
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return {"rate": rate, "planned": len(requests), "start_wall": wall0, "end_wall": time.time(),
            "connections": connections, "errors": errors, "results": results}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("config")
    p.add_argument("rate", type=float)
    p.add_argument("seconds", type=float)
    p.add_argument("out")
    p.add_argument("--connections", type=int, default=32)
    a = p.parse_args()
    host, port, requests = build_requests(a.url, Path(a.config), int(a.rate * a.seconds))
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    data = runner(run(host, port, requests, a.rate, a.connections))
    Path(a.out).write_text(json.dumps(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
