"""The fake provider for the polling benchmark: its own process, a bare ASGI app under uvicorn.

    python bench/polling/fake_provider.py --port P --provider genly|revid --api-key K
                                          [--limit-per-s R] [--enforce]

Answers the provider's status API the way handlers/providers/genly.py / revid.py read it:

* genly: `GET /api/renders/{id}` → `{_id, workflow_id, inputs, outputs, phase, ...}`; `phase`
  is `processing` before the job's finish time and `completed` (with one `outputs[].cover_src`)
  from then on.
* revid: `GET /v1/jobs/{id}` → `{"status": "processing", "result": null}` before, and
  `{"status": "completed", "result": "https://…/image.png"}` after.

`Authorization: Bearer <key>` is required (401 otherwise); an id that was not planned is 404.

Control (the runner): `POST /control/plan` with `{"jobs": {"<id>": offset_s, ...}}` sets every
job's finish time as an offset from the origin; until `POST /control/start {"origin": t}`
(t on CLOCK_MONOTONIC, which is system-wide on Linux) every job is still processing, so jobs
cannot finish before they are all registered. `GET /control/stats` answers every status request
as columns: arrival time (time.monotonic() when uvicorn handed the request to the app, i.e. once
its head was parsed), job index, HTTP status answered, and whether the answer said completed.

`--limit-per-s R`: counts requests that a strict sliding-window limiter of R per second would
refuse (the request is the (R+1)-th within the last 1 s of arrivals); with `--enforce` they get
`429` with `Retry-After: 1` (and are not counted as answered polls), without it they are only
counted and answered normally.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from typing import Any

PROVIDER = "genly"
API_KEY = b""
LIMIT: float | None = None
ENFORCE = False

finish_at: dict[str, float] = {}  # job id → offset from origin
index_of: dict[str, int] = {}
origin: float | None = None
# one entry per status request
arrivals: list[float] = []
jobs: list[int] = []
codes: list[int] = []
completed: list[int] = []
window: collections.deque[float] = collections.deque()  # accepted arrivals in the last 1 s
over_limit = 0  # requests beyond the sliding-window limit (429 when enforcing)
other_requests = 0


async def _reply(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None
                 = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _job_body(job_id: str, done: bool) -> bytes:
    if PROVIDER == "revid":
        doc: dict[str, Any] = {"status": "completed" if done else "processing",
                               "result": f"https://cdn.revid.test/{job_id}.png" if done else None}
    else:
        outputs = [{"name": "image_0", "type": "image", "desc": "Output image",
                    "cover_src": f"https://cdn.genly.test/renders/{job_id}/0.png",
                    "cover_width": 1024, "cover_height": 1024}] if done else []
        now = int(time.time())
        doc = {"_id": job_id, "workflow_id": "674829a60a1c7e0df43198b8", "inputs": [],
               "outputs": outputs, "phase": "completed" if done else "processing",
               "is_sample": False, "is_public": False, "created_at": now, "updated_at": now,
               "misc": {}}
    return json.dumps(doc, separators=(",", ":")).encode()


STATUS_PREFIX = {"genly": "/api/renders/", "revid": "/v1/jobs/"}


async def _status(scope: dict[str, Any], send: Any, now: float, job_id: str) -> None:
    global over_limit
    auth = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            auth = value
            break
    idx = index_of.get(job_id, -1)
    if LIMIT:
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= LIMIT:
            over_limit += 1
            if ENFORCE:
                arrivals.append(now)
                jobs.append(idx)
                codes.append(429)
                completed.append(0)
                await _reply(send, 429, b'{"error":"rate limit"}', [(b"retry-after", b"1")])
                return
        window.append(now)
    if auth != b"Bearer " + API_KEY:
        code, body, done = 401, b'{"error":"Unauthorized"}', False
    elif idx < 0:
        code, body, done = 404, b'{"error":"Render not found"}', False
    else:
        done = origin is not None and now >= origin + finish_at[job_id]
        code, body = 200, _job_body(job_id, done)
    arrivals.append(now)
    jobs.append(idx)
    codes.append(code)
    completed.append(1 if done else 0)
    await _reply(send, code, body)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global origin, other_requests
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
    prefix = STATUS_PREFIX[PROVIDER]
    if method == "GET" and path.startswith(prefix):
        await _status(scope, send, now, path[len(prefix):])
    elif method == "POST" and path == "/control/plan":
        plan = json.loads(await _read_body(receive))["jobs"]
        finish_at.clear()
        index_of.clear()
        for i, (job_id, offset) in enumerate(plan.items()):
            finish_at[job_id] = float(offset)
            index_of[job_id] = i
        await _reply(send, 200, json.dumps({"planned": len(finish_at)}).encode())
    elif method == "POST" and path == "/control/start":
        origin = float(json.loads(await _read_body(receive))["origin"])
        await _reply(send, 200, b"{}")
    elif method == "GET" and path == "/control/count":
        await _reply(send, 200, str(len(arrivals)).encode())
    elif method == "GET" and path == "/control/stats":
        body = json.dumps({"provider": PROVIDER, "origin": origin, "limit_per_s": LIMIT,
                           "enforce": ENFORCE, "over_limit": over_limit,
                           "other_requests": other_requests, "arrivals": arrivals,
                           "jobs": jobs, "codes": codes, "completed": completed},
                          separators=(",", ":")).encode()
        await _reply(send, 200, body)
    else:
        other_requests += 1
        await _read_body(receive)
        await _reply(send, 404, b'{"error":"Not found"}')


def main() -> int:
    global PROVIDER, API_KEY, LIMIT, ENFORCE
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--provider", choices=sorted(STATUS_PREFIX), default="genly")
    p.add_argument("--api-key", required=True)
    p.add_argument("--limit-per-s", type=float, default=None)
    p.add_argument("--enforce", action="store_true")
    a = p.parse_args()
    PROVIDER, API_KEY, LIMIT, ENFORCE = a.provider, a.api_key.encode(), a.limit_per_s, a.enforce
    import uvicorn

    # hookyard serve's uvicorn settings (bench/ingest/run.py UVICORN_FLAGS)
    uvicorn.run(app, host="127.0.0.1", port=a.port, loop="auto", http="auto", workers=1,
                access_log=False, lifespan="on", server_header=False,
                timeout_graceful_shutdown=10, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
