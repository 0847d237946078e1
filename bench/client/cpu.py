"""CPU per delivery of HTTP clients: what one POST of a small event costs the sending process.

Starts bench/delivery/sink_app.py under uvicorn in its own process (so its CPU is not counted),
then, for each client, sends N POSTs of a 150-byte JSON event with C in flight and reports the
sending process's CPU time (user + system, resource.getrusage) divided by N, and the event
loop thread's alone (time.thread_time: what limits a loop that also serves webhooks; a client
that works on threads of its own, as pyreqwest does, costs the loop less than its total). Each
client runs on uvloop, as delivery does in `serve` and `worker`. Clients:

  httpx           httpx.AsyncClient, pool sized to C (what hookyard used first)
  httpx+aiohttp   httpx's API over the aiohttp transport (PyPI httpx-aiohttp; install it first)
  aiohttp         aiohttp.ClientSession, connector limit C (what hookyard used before)
  pyreqwest       pyreqwest's async Client (Rust reqwest on its own thread), max_connections C
  hookyard        hookyard's own HTTP sink `send` (signing, capped read, deadline) as
                  delivery runs it, on the client it uses

Usage: .venv/bin/python bench/client/cpu.py [--requests 5000] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop

ROOT = Path(__file__).resolve().parents[2]
EVENT = {"id": "evt_01M80J4SWKTZVC4DFVR1DADEET", "type": "generation.completed",
         "source": "rendergrid", "job_id": "c0ea4d5b", "status": "completed",
         "outputs": ["https://cdn.example/x.jpg"], "cost": 0.1}
BODY = json.dumps(EVENT).encode()


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(send: Callable[[], Awaitable[Any]], n: int, c: int) -> tuple[float, float, float]:
    """(process CPU ms per request, the loop thread's CPU ms per request, requests/s)"""
    for _ in range(50):  # warm the pool
        await send()
    queue = iter(range(n))
    before, loop_before, started = cpu(), time.thread_time(), time.perf_counter()

    async def lane() -> None:
        for _ in queue:
            await send()

    await asyncio.gather(*(lane() for _ in range(c)))
    return ((cpu() - before) / n * 1000, (time.thread_time() - loop_before) / n * 1000,
            n / (time.perf_counter() - started))


async def measure(name: str, url: str, n: int, c: int) -> tuple[float, float, float]:
    headers = {"content-type": "application/json", "webhook-id": EVENT["id"]}
    if name == "httpx":
        limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
        async with httpx.AsyncClient(limits=limits) as client:
            return await run(lambda: client.post(url, content=BODY, headers=headers), n, c)
    if name == "httpx+aiohttp":
        from httpx_aiohttp import AiohttpTransport

        limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
        async with httpx.AsyncClient(transport=AiohttpTransport(limits=limits)) as client:
            return await run(lambda: client.post(url, content=BODY, headers=headers), n, c)
    if name == "aiohttp":
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:
            async def post() -> None:
                async with session.post(url, data=BODY, headers=headers) as r:
                    await r.read()
            return await run(post, n, c)
    if name == "pyreqwest":
        from pyreqwest.client import ClientBuilder

        async with ClientBuilder().max_connections(c).build() as rq_client:
            async def rq_post() -> None:
                await (await rq_client.post(url).headers(headers).body_bytes(BODY).build()
                       .send()).bytes()
            return await run(rq_post, n, c)
    if name == "hookyard":
        from handlers.sinks import http as http_sink
        from receiver.delivery import close_context, sink_context

        ctx = sink_context(c, 10.0)
        sink = http_sink.create("bench", {"url": url,
                                          "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, ctx)
        async def send() -> None:
            async with asyncio.timeout(10.0):  # as delivery runs every send (one timer)
                await sink.send(EVENT)

        try:
            return await run(send, n, c)
        finally:
            await sink.aclose()
            await close_context(ctx)
    raise SystemExit(f"unknown client {name}")


@contextlib.contextmanager
def sink_server() -> Iterator[str]:
    """bench/delivery/sink_app.py under uvicorn in its own process: the URL to POST to."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.delivery.sink_app:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log"], cwd=ROOT)
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/count")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/a"
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="httpx,httpx+aiohttp,aiohttp,pyreqwest,hookyard")
    parser.add_argument("--once", metavar="URL",
                        help="one client (--clients), one run against URL, nothing written "
                        "(bench/client/instructions.py runs this under callgrind)")
    args = parser.parse_args()
    if args.once:
        uvloop.run(measure(args.clients, args.once, args.requests, args.concurrency))
        return
    with sink_server() as url:
        results: dict[str, list[tuple[float, float, float]]] = {}
        for _ in range(args.rounds):
            for name in args.clients.split(","):
                results.setdefault(name, []).append(
                    uvloop.run(measure(name, url, args.requests, args.concurrency)))
        print(f"{'client':<15} {'CPU ms/request, process (rounds)':<34} "
              f"{'loop thread':<26} {'req/s (best)':>12}")
        for name, rounds in results.items():
            shown = " / ".join(f"{ms:.3f}" for ms, _, _ in rounds)
            loop = " / ".join(f"{ms:.3f}" for _, ms, _ in rounds)
            print(f"{name:<15} {shown:<34} {loop:<26} {max(r for _, _, r in rounds):>12.0f}")
        (ROOT / "bench" / "client" / "results.json").write_text(json.dumps(
            {"requests": args.requests, "concurrency": args.concurrency, "results": results},
            indent=1))


if __name__ == "__main__":
    main()
