"""The sink for the polling benchmark: its own process, a bare ASGI app under uvicorn.

    python -m uvicorn bench.polling.sink_app:app --host 127.0.0.1 --port P ...

`POST /events` → 200 at once; per request it keeps the `webhook-id` header (hookyard's event
id), the body's `job_id` and `type`, and time.monotonic() when the app was called (once uvicorn
had parsed the request head; CLOCK_MONOTONIC is system-wide on Linux, the fake provider's
clock too). `GET /count` answers the number kept, `GET /stats` all of them as
`[[webhook_id, job_id, type, t], ...]`.
"""

from __future__ import annotations

import json
import time
from typing import Any

records: list[tuple[str | None, str | None, str | None, float]] = []


async def _reply(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
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
    now = time.monotonic()
    path, method = scope["path"], scope["method"]
    if method == "POST" and path == "/events":
        webhook_id = None
        for name, value in scope["headers"]:
            if name == b"webhook-id":
                webhook_id = value.decode()
                break
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        job_id = kind = None
        try:
            doc = json.loads(b"".join(chunks))
            job_id, kind = doc.get("job_id"), doc.get("type")
        except (ValueError, AttributeError):
            pass
        records.append((webhook_id, job_id, kind, now))
        await _reply(send, 200, b"")
    elif method == "GET" and path == "/count":
        await _reply(send, 200, str(len(records)).encode())
    elif method == "GET" and path == "/stats":
        await _reply(send, 200, json.dumps(records, separators=(",", ":")).encode())
    else:
        await _reply(send, 404, b"")
