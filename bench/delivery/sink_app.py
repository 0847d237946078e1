"""The sink for the fan-out benchmark: a bare ASGI app that answers 200 at once.

POST /a, /b, /c (anything else: 404) → 200 with an empty body; per request it keeps
(path, the `webhook-id` header, time.time() when the app was called, i.e. as soon as uvicorn
had parsed the request head). Nothing is verified or parsed, so the sink costs as little CPU as
a uvicorn app can. `GET /stats?since=N` answers the records from index N on as compact JSON
(`[[path, webhook_id, t], ...]`), `GET /count` the number kept.

Served by `python -m uvicorn bench.delivery.sink_app:app` with the uvicorn settings
`hookyard serve` uses (see bench/delivery/run.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

PATHS = {"/a", "/b", "/c"}
records: list[tuple[str, str | None, float]] = []


async def _reply(send: Any, status: int, body: bytes, ctype: bytes = b"text/plain") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    now = time.time()
    path, method = scope["path"], scope["method"]
    if method == "POST" and path in PATHS:
        webhook_id = None
        for name, value in scope["headers"]:
            if name == b"webhook-id":
                webhook_id = value.decode()
                break
        more = True
        while more:  # read (and drop) the body so keep-alive stays clean
            message = await receive()
            more = message.get("more_body", False)
        records.append((path, webhook_id, now))
        await _reply(send, 200, b"")
    elif method == "GET" and path == "/count":
        await _reply(send, 200, str(len(records)).encode())
    elif method == "GET" and path == "/stats":
        query = scope.get("query_string", b"").decode()
        since = int(query.split("since=", 1)[1]) if "since=" in query else 0
        body = json.dumps(records[since:], separators=(",", ":")).encode()
        await _reply(send, 200, body, b"application/json")
    else:
        await _reply(send, 404, b"")
