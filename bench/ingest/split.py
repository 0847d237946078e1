"""What-if for issue 11's next design, with a real second process: the web process does HTTP
only and a child verifies, parses, logs, prepares and commits (the "split"). bench/ingest/
front.py measured the front alone with the child replaced by an instant answer; this one runs
the child's real work, so the number is what the split would give on this machine.

    .venv/bin/python bench/ingest/split.py [--rounds 3] [--duration 10]

The web process (`app` below, served by uvicorn with `hookyard serve`'s settings): header dict,
request id, content type, body; one GroupCommit hand-off of (source, headers, body, request
id), pickled over a socket pair to the child; the child's answer (status and JSON body) goes
out as the response. The child (`child_main`): builds the sources' verifiers and providers and
the router from the same config as `hookyard serve`, configures the same JSON logs, and for
every frame verifies, parses (receiver.hooks.parse_json, the provider's parse_webhook), routes,
prepares the rows (receiver.store.rows.prepare), commits them in one transaction on its own
SQLite connection under the writers' lock (receiver.store.sqlite.events.write_batch, as the
ingest writer process does), logs `webhook.accepted` per item and answers. Refusals answer
401/400 as the endpoint does. Not here (a prototype, not the product): fal's JWKS fetch,
confirm-by-fetch sources, metrics, delivery wake-ups.

`SPLIT_VERIFY_IN_WEB=1`: the web process checks the signature (401 there) and the child does
the rest: the variant that measured best (bench/RESULTS.md), and the one that keeps fal's JWKS
fetch where the event loop is.

Each round runs `hookyard serve` (as run.py starts it), the split, and bench/ingest/bare_app.py
one after another (same wrk script, same pre-signed Rendergrid webhooks, a database each for
serve and the split) and checks stored rows against the 200s, so the three are compared
within minutes of each other on a machine whose speed drifts.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import shutil
import socket
import sqlite3
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.ingest import run  # noqa: E402
from receiver.core.batching import GroupCommit  # noqa: E402

FRAME = struct.Struct("!I")
Item = tuple[str, dict[str, str], bytes, str]


# -- the web process ----------------------------------------------------------------------------


class _Child:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    lock = asyncio.Lock()


_child = _Child()


async def _hand_off(items: list[Item]) -> list[tuple[int, bytes]]:
    payload = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
    async with _child.lock:
        _child.writer.write(FRAME.pack(len(payload)) + payload)
        (size,) = FRAME.unpack(await _child.reader.readexactly(FRAME.size))
        return pickle.loads(await _child.reader.readexactly(size))  # type: ignore[no-any-return]  # noqa: S301


_commit: GroupCommit[Item, tuple[int, bytes]] = GroupCommit(_hand_off, name="split",
                                                            max_batch=512)


async def _start_child() -> None:
    ours, theirs = socket.socketpair()
    await asyncio.create_subprocess_exec(
        sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
        "from bench.ingest.split import child_main; child_main(sys.argv[1:])",
        str(theirs.fileno()), os.environ["SPLIT_CONFIG"], pass_fds=(theirs.fileno(),),
        stdin=asyncio.subprocess.DEVNULL)
    theirs.close()
    _child.reader, _child.writer = await asyncio.open_connection(sock=ours)
    await _child.reader.readexactly(1)  # ready


_cache: dict[str, Any] = {}


def _verifiers() -> dict[str, Any]:
    if not _cache:
        from receiver import settings
        from receiver.app import _verifier

        config = settings.load(os.environ["SPLIT_CONFIG"])
        _cache.update({n: _verifier(s) for n, s in config.sources.items()})
    return _cache


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await _start_child()
            await send({"type": "lifespan.startup.complete"})
        _child.writer.close()
        await send({"type": "lifespan.shutdown.complete"})
        return
    from receiver.hooks import (
        _header_dict,
        check_content_type,
        new_request_id,
        read_body,
        request_id_of,
    )

    headers = _header_dict(scope)
    request_id = request_id_of(headers.get("x-request-id")) or new_request_id()
    check_content_type(headers.get("content-type"))
    body = await read_body(receive, headers.get("content-length"), 1_048_576)
    source = scope["path"][len("/hooks/"):]
    if os.environ.get("SPLIT_VERIFY_IN_WEB"):
        await _verifiers()[source].verify(headers, body)
        headers["x-verified-in-web"] = "1"
    status, answer = await _commit.submit((source, headers, body, request_id))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(answer)).encode()),
                            (b"x-request-id", request_id.encode())]})
    await send({"type": "http.response.body", "body": answer})


# -- the child ----------------------------------------------------------------------------------


def _sync(coroutine: Any) -> Any:
    """The result of a coroutine that never waits (the HMAC verifiers)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the verifier waited")


def child_main(argv: list[str]) -> None:
    import structlog

    from handlers import providers
    from handlers.providers.base import WebhookContext
    from receiver import logs, settings
    from receiver.app import _verifier
    from receiver.core import jsonx
    from receiver.core.errors import HookyardError
    from receiver.hooks import UNSTORED_HEADERS, parse_json
    from receiver.router import Router
    from receiver.store import NewEvent
    from receiver.store.rows import prepare, results
    from receiver.store.sqlite.connection import configure, exclusive, in_transaction
    from receiver.store.sqlite.events import write_batch

    sock = socket.socket(fileno=int(argv[0]))
    config = settings.load(argv[1])
    logs.configure(config.secret_values(), cache=True)
    log = structlog.get_logger("hookyard.http")
    intakes = {n: (_verifier(s), providers.PROVIDERS[s.provider])
               for n, s in config.sources.items() if s.receives_webhooks}
    router = Router(config.routes)
    path = config.server.database.removeprefix("sqlite:///")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    configure(conn, 5000)
    lock_fd = os.open(f"{path}-lock", os.O_RDWR | os.O_CREAT, 0o644)
    sock.sendall(b"r")
    buffer = sock.makefile("rb")
    while True:
        header = buffer.read(FRAME.size)
        if len(header) < FRAME.size:
            return
        items: list[Item] = pickle.loads(buffer.read(FRAME.unpack(header)[0]))  # noqa: S301
        answers: list[tuple[int, bytes] | None] = [None] * len(items)
        accepted, where = [], []
        for i, (source, headers, body, _) in enumerate(items):
            try:
                verifier, provider = intakes[source]
                if headers.pop("x-verified-in-web", None):
                    message_id = None
                else:
                    message_id = _sync(verifier.verify(headers, body)).message_id
                ctx = WebhookContext(source=source, provider=provider.name, headers=headers,
                                     body=body, payload=parse_json(body),
                                     message_id=message_id)
                event = provider.parse_webhook(ctx)
            except HookyardError as exc:
                answers[i] = (exc.status, jsonx.dumps(exc.to_json()))
                continue
            kept = {k: v for k, v in headers.items() if k not in UNSTORED_HEADERS}
            accepted.append(NewEvent(event, body, kept, router.sinks_for(source, event.type)))
            where.append(i)
        if accepted:
            batch, positions = prepare(accepted, time.time())
            written = exclusive(conn, lock_fd, in_transaction, write_batch, batch)
            for i, item, stored in zip(where, accepted, results(batch, positions, written),
                                       strict=True):
                log.info("webhook.accepted", source=items[i][0], event_id=stored.event_id,
                         type=item.event.type, job_id=item.event.job_id,
                         duplicate=stored.duplicate, deliveries=stored.deliveries,
                         request_id=items[i][3])
                answers[i] = (200, jsonx.dumps({"event_id": stored.event_id,
                                                "duplicate": stored.duplicate}))
        payload = pickle.dumps(answers, protocol=pickle.HIGHEST_PROTOCOL)
        sock.sendall(FRAME.pack(len(payload)) + payload)


# -- the runner ---------------------------------------------------------------------------------


def main() -> int:
    from bench.ingest.front import _uvicorn, what_if_setup

    setup = what_if_setup("split.py", __doc__.splitlines()[0], 10.0)
    if setup is None:
        return 2
    args, wrk, wrk_args, workdir = setup
    dbs, configs = {}, {}
    for name in ("serve", "split"):  # a database each
        (workdir / name).mkdir()
        dbs[name] = workdir / name / "hookyard.db"
        configs[name] = workdir / name / "hookyard.toml"
        configs[name].write_text(run.CONFIG.format(
            database=f"sqlite:///{dbs[name]}", secret=run.SECRET, tolerance=run.TOLERANCE_S,
            jsonl=workdir / name / "e.jsonl"))
    _schema(dbs["split"])
    os.environ["SPLIT_CONFIG"] = str(configs["split"])
    verifier = run._verifier(configs["split"])
    rates: dict[str, list[float]] = {"serve": [], "split": [], "bare": []}
    stored_ok = []
    with run._servers(configs["serve"], workdir / "serve") as (serve, bare), \
            _uvicorn("bench.ingest.split:app", workdir) as split:
        urls = {"serve": serve, "split": split}
        run._write_batch(workdir / "bare.http", verifier, 200_000, bare)
        for number in range(1, args.rounds + 1):
            for name in ("serve", "split", "bare"):
                if name in urls:
                    batch = workdir / f"{name}-{number}.http"
                    run._write_batch(batch, verifier, int(8000 * args.duration), urls[name])
                    before = run._settled_count(dbs[name])
                    data = run._run_wrk(wrk, wrk_args, urls[name], batch, args.duration, "once")
                    stored_ok.append(run._settled_count(dbs[name]) - before == data["ok200"])
                    batch.unlink()
                else:
                    data = run._run_wrk(wrk, wrk_args, bare, workdir / "bare.http",
                                        args.duration, "wrap")
                row = run._row(name, data, args.duration)
                rates[name].append(row["rps"])
                print(f"round {number} {name:5} {row['rps']:9.1f} req/s  p99 "
                      f"{row['p99_ms']:.2f} ms  non-2xx {row['non2xx']}", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    summary: dict[str, Any] = {k: [round(r) for r in v] for k, v in rates.items()}
    for name in ("serve", "split"):
        ratios = [s / b for s, b in zip(rates[name], rates["bare"], strict=True)]
        summary[f"{name}_ratios"] = [round(r, 3) for r in ratios]
        summary[f"{name}_ratio_median"] = round(statistics.median(ratios), 3)
    summary["stored_equals_200"] = all(stored_ok)
    print(json.dumps(summary))
    return 0


def _schema(db: Path) -> None:
    """The store's schema, made by the store itself (as `hookyard serve` would at start)."""
    from receiver.store.sqlite import SqliteStore

    async def make() -> None:
        store = SqliteStore(str(db))
        await store.open()
        await store.close()

    asyncio.run(make())


if __name__ == "__main__":
    raise SystemExit(main())
