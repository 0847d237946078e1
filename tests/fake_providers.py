"""Fake image-generation providers on 127.0.0.1, for polling and end-to-end tests.

Each fake is an `AsgiServer` (tests/fakes.py): a Starlette app under a real uvicorn server in a
background thread, answering the provider's status API the way its document says. Nothing here
touches the internet.

    with FakeRendergrid(api_key="rg_live_test") as fake:
        fake.set_job("c1", state="completed", outputs=["https://cdn.example/1.jpg"],
                     running_polls=2)          # "processing" twice, then completed
        source_base_url = fake.base_url        # http://127.0.0.1:PORT/api/public/v1

Common API (`FakeProvider`):

* `FakeX(api_key=DEFAULT_KEY, clock=time.monotonic)`; `start()`/`stop()` or `with`. `url` is the
  server root; `base_url` is the root plus the provider's documented API path (what a source's
  `base_url` is set to).
* `set_job(job_id, state="running", outputs=(), error=None, *, running_polls=0,
  running_for_s=0.0, **fields)`. `state` is `running`, `completed` or `failed` (mapped to the
  provider's own words), or any word of the provider's own (`queued`, `dead`, `censored`, an
  unknown word, …), sent as is. `running_polls=N`: the first N status answers say running;
  `running_for_s=S`: answers say running until S seconds after `set_job`. `fields` are extra
  top-level body fields (`cost=0.1`, `model=…`). `jobs` is the dict of `FakeJob`s (guarded by
  `lock`); `forget(job_id)` removes one.
* `requests`: every request, oldest first (`Recorded` from tests/fakes.py: method, path, query,
  lower-case headers, body, `at` = clock time of arrival). `exchanges`: `(Recorded, status)` per
  answered request. `status_requests(job_id)`: the status GETs for one job.
* Auth: a missing or wrong key (`Authorization: Bearer <key>`; RenderNet `X-API-KEY: <key>`) is
  401 in the provider's error shape. An unknown job, or any other path, is 404 in that shape.
* `fail(times, status=500)`: the next `times` requests answer `status` (before auth and limits;
  a 429 carries `Retry-After: 1`). `delay(seconds, times=None)`: hold every answer (or the next
  `times`) that long; `delay(0)` stops. `clear()` forgets requests, failures and delays.

Per provider:

* `FakeRendergrid(min_interval_s=5.0, rate_per_min=120, window_s=60.0)`: `GET /creations/{id}`.
  Running `{id, status}`; completed adds `result_urls`; failed adds `error`; 404 is
  `{"error": {"code": "ERR_NOT_FOUND", …}}`. The same creation polled again (same key) within
  `min_interval_s` of its last answered poll is 429 `ERR_RATE_LIMIT`; more than `rate_per_min`
  requests per key in a fixed `window_s` window is 429 too; both carry `Retry-After` (whole
  seconds, rounded up). A 429 does not reset the creation's 5 s clock.
* `FakeRenderful`: `GET /generations/{id}`, the flat `GenerationStatusResponse`; `set_job(…,
  output_field="outputs" | "output" | "both")` picks where the URLs go. The deprecated
  `/predictions/{id}/result` is not served (404), so a test can see it is never used.
* `FakeRenderNet`: `GET /pub/v1/generations/{id}` in the `{data, err}` envelope. `completed` makes
  one `success` item per output; `running` that many `pending` items; `failed` one `failed` item;
  any other word one item with that word. `set_media(job_id, [("success", url), ("censored",
  None), …])` sets a mixed batch exactly.
* `FakeRevid`: `GET /v1/jobs/{id}` → `{status, result}`. `overload(times)`: 503 "overloaded".
* `FakeGenly`: `GET /api/renders/{id}` → a render with `phase` and `outputs[].cover_src`; a
  failure's `error` goes in `misc.error`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import ALL_METHODS, AsgiServer, Recorded

DEFAULT_KEY = "test_key_0123456789"
Clock = Callable[[], float]


@dataclass(slots=True)
class FakeJob:
    """One job as the fake provider knows it."""

    state: str
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    running_polls: int = 0  # status answers still to say "running"
    running_until: float = 0.0  # clock time until which answers say "running"
    fields: dict[str, Any] = field(default_factory=dict)  # extra top-level body fields
    media: list[tuple[str, str | None]] | None = None  # RenderNet: an exact batch
    created_at: float = field(default_factory=time.time)  # unix seconds (Genly's created_at)


class FakeProvider(AsgiServer):
    """The shared machinery; subclasses give paths, words and body shapes."""

    PREFIX: ClassVar[str] = ""  # the path part of the provider's documented base URL
    STATUS_PATH: ClassVar[str] = "/{job_id}"
    # Our generic state names → the provider's words; any other state is sent as is.
    WORDS: ClassVar[Mapping[str, str]] = {
        "running": "processing", "completed": "completed", "failed": "failed",
    }
    # Error kind → (code, message) in the provider's words.
    ERRORS: ClassVar[Mapping[str, tuple[str, str]]] = {
        "unauthorized": ("Unauthorized", "Missing or invalid API key"),
        "not_found": ("Not found", "Job not found"),
        "rate_limited": ("Too Many Requests", "Rate limit exceeded"),
        "server_error": ("Internal Server Error", "Internal server error"),
        "overloaded": ("Service Unavailable", "Service unavailable"),
    }

    def __init__(self, api_key: str = DEFAULT_KEY, *, clock: Clock = time.monotonic) -> None:
        # `:path` so a quoted id with a `/` in it still reaches the job lookup.
        status_route = self.PREFIX + self.STATUS_PATH.replace("{job_id}", "{job_id:path}")
        routes = [
            Route(status_route, self._status_endpoint, methods=["GET"]),
            Route("/{path:path}", self._unknown_endpoint, methods=ALL_METHODS),
        ]
        super().__init__(Starlette(routes=routes))
        self.api_key = api_key
        self.clock = clock
        self.lock = threading.Lock()
        self.jobs: dict[str, FakeJob] = {}
        self._requests: list[Recorded] = []
        self._exchanges: list[tuple[Recorded, int]] = []
        self._failures: list[int] = []  # statuses still to answer, in order
        self._delay_s = 0.0
        self._delay_times: int | None = None  # None: every answer

    @property
    def base_url(self) -> str:
        """The root a source's `base_url` is set to (the documented API path included)."""
        return self.url + self.PREFIX

    # --- the test's controls ------------------------------------------------------------------

    def set_job(
        self,
        job_id: str,
        state: str = "running",
        outputs: Iterable[str] = (),
        error: str | None = None,
        *,
        running_polls: int = 0,
        running_for_s: float = 0.0,
        **fields: Any,
    ) -> FakeJob:
        """Create or replace a job (see the module docstring)."""
        job = FakeJob(
            state=state, outputs=list(outputs), error=error, running_polls=running_polls,
            running_until=self.clock() + running_for_s, fields=dict(fields),
        )
        with self.lock:
            self.jobs[job_id] = job
        return job

    def forget(self, job_id: str) -> None:
        with self.lock:
            self.jobs.pop(job_id, None)

    def fail(self, times: int, status: int = 500) -> None:
        """Answer the next `times` requests with `status`."""
        with self.lock:
            self._failures.extend([status] * times)

    def delay(self, seconds: float, times: int | None = None) -> None:
        """Hold every answer (or the next `times`) for `seconds`; `delay(0)` stops."""
        with self.lock:
            self._delay_s, self._delay_times = seconds, times

    def clear(self) -> None:
        with self.lock:
            self._requests.clear()
            self._exchanges.clear()
            self._failures.clear()
            self._delay_s, self._delay_times = 0.0, None

    @property
    def requests(self) -> list[Recorded]:
        with self.lock:
            return list(self._requests)

    @property
    def exchanges(self) -> list[tuple[Recorded, int]]:
        with self.lock:
            return list(self._exchanges)

    def status_requests(self, job_id: str) -> list[Recorded]:
        """The status GETs for `job_id`, oldest first."""
        path = self.PREFIX + self.STATUS_PATH.format(job_id=job_id)
        return [r for r in self.requests if r.method == "GET" and r.path == path]

    # --- what subclasses shape ----------------------------------------------------------------

    def authorized(self, headers: Mapping[str, str]) -> bool:
        return headers.get("authorization") == f"Bearer {self.api_key}"

    def error_body(self, code: str, message: str) -> Any:
        return {"error": code, "message": message}

    def job_body(self, job_id: str, job: FakeJob, word: str) -> Any:
        raise NotImplementedError

    def limit(self, request: Recorded, job_id: str) -> Response | None:
        """A 429 when the request breaks a documented limit; None lets it through."""
        return None

    # --- the server ---------------------------------------------------------------------------

    def error(self, status: int, kind: str, headers: Mapping[str, str] | None = None) -> Response:
        code, message = self.ERRORS[kind]
        return JSONResponse(self.error_body(code, message), status, dict(headers or {}))

    def word(self, job: FakeJob) -> str:
        """The provider's word for the job now (consumes one of its `running_polls`)."""
        if job.running_polls > 0:
            job.running_polls -= 1
            return self.WORDS["running"]
        if self.clock() < job.running_until:
            return self.WORDS["running"]
        return self.WORDS.get(job.state, job.state)

    async def _status_endpoint(self, request: Request) -> Response:
        return await self._serve(request, request.path_params["job_id"])

    async def _unknown_endpoint(self, request: Request) -> Response:
        return await self._serve(request, None)

    async def _serve(self, request: Request, job_id: str | None) -> Response:
        recorded = Recorded(
            method=request.method, path=request.url.path, query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(), at=self.clock(),
        )
        with self.lock:
            self._requests.append(recorded)
            delay_s = self._take_delay()
        if delay_s:
            await self.pause(delay_s)
        response = self._answer(recorded, job_id)
        with self.lock:
            self._exchanges.append((recorded, response.status_code))
        return response

    def _take_delay(self) -> float:
        if not self._delay_s or self._delay_times == 0:
            return 0.0
        if self._delay_times is not None:
            self._delay_times -= 1
        return self._delay_s

    def _answer(self, request: Recorded, job_id: str | None) -> Response:
        with self.lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            return self._failure(failure)
        if not self.authorized(request.headers):
            return self.error(401, "unauthorized")
        if job_id is None:
            return self.error(404, "not_found")
        with self.lock:
            limited = self.limit(request, job_id)
            if limited is not None:
                return limited
            job = self.jobs.get(job_id)
            if job is None:
                return self.error(404, "not_found")
            return JSONResponse(self.job_body(job_id, job, self.word(job)))

    def _failure(self, status: int) -> Response:
        if status == 429:
            return self.error(429, "rate_limited", {"Retry-After": "1"})
        if status == 503:
            return self.error(503, "overloaded")
        return self.error(status, "server_error")


def retry_after(seconds: float) -> dict[str, str]:
    """`Retry-After` in whole seconds, rounded up, at least 1."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class FakeRendergrid(FakeProvider):
    """Rendergrid's `GET /creations/{id}` with its per-creation and per-key limits."""

    PREFIX = "/api/public/v1"
    STATUS_PATH = "/creations/{job_id}"
    ERRORS: ClassVar[Mapping[str, tuple[str, str]]] = {
        "unauthorized": ("ERR_UNAUTHORIZED", "Invalid or missing API key"),
        "not_found": ("ERR_NOT_FOUND", "Creation not found"),
        "rate_limited": ("ERR_RATE_LIMIT", "Too many requests"),
        "server_error": ("ERR_INTERNAL", "Internal server error"),
        "overloaded": ("ERR_UNAVAILABLE", "Service unavailable"),
    }

    def __init__(
        self,
        api_key: str = DEFAULT_KEY,
        *,
        clock: Clock = time.monotonic,
        min_interval_s: float = 5.0,
        rate_per_min: int = 120,
        window_s: float = 60.0,
    ) -> None:
        super().__init__(api_key, clock=clock)
        self.min_interval_s = min_interval_s
        self.rate_per_min = rate_per_min
        self.window_s = window_s
        self._windows: dict[str, tuple[float, int]] = {}  # key → (window start, requests)
        self._last_poll: dict[tuple[str, str], float] = {}  # (key, creation) → last answer

    def error_body(self, code: str, message: str) -> Any:
        return {"error": {"code": code, "message": message}}

    def job_body(self, job_id: str, job: FakeJob, word: str) -> Any:
        body: dict[str, Any] = {"id": job_id, "status": word}
        if word == "completed":
            body["result_urls"] = list(job.outputs)
        elif word == "failed":
            body["result_urls"] = []
            body["error"] = job.error or "Generation failed"
        if word in ("completed", "failed"):
            body.update(job.fields)
        return body

    def limit(self, request: Recorded, job_id: str) -> Response | None:
        key = request.headers.get("authorization", "")
        now = request.at
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        self._windows[key] = (start, count + 1)
        if count + 1 > self.rate_per_min:
            return self.error(429, "rate_limited", retry_after(start + self.window_s - now))
        last = self._last_poll.get((key, job_id))
        if last is not None and now - last < self.min_interval_s:
            return self.error(429, "rate_limited", retry_after(last + self.min_interval_s - now))
        self._last_poll[(key, job_id)] = now
        return None


class FakeRenderful(FakeProvider):
    """Renderful's `GET /generations/{id}` (never the deprecated `/predictions/{id}/result`)."""

    PREFIX = "/api/v1"
    STATUS_PATH = "/generations/{job_id}"
    ERRORS: ClassVar[Mapping[str, tuple[str, str]]] = {
        **FakeProvider.ERRORS,
        "not_found": ("Not found", "Generation not found"),
    }

    def job_body(self, job_id: str, job: FakeJob, word: str) -> Any:
        fields = dict(job.fields)
        where = fields.pop("output_field", "outputs")
        body: dict[str, Any] = {
            "id": job_id, "type": "image-to-image", "model": "gpt-image-1-mini-i2i",
            "status": word, "created_at": "2026-11-22T09:59:41.512Z",
            "updated_at": "2026-11-22T10:00:58.087Z",
        }
        if word == "completed":
            if where in ("outputs", "both"):
                body["outputs"] = list(job.outputs)
            if where in ("output", "both") and job.outputs:
                body["output"] = job.outputs[0]
        elif word == "failed":
            body["error"] = job.error or "Generation failed"
        body.update(fields)
        return body


class FakeRenderNet(FakeProvider):
    """RenderNet's `GET /pub/v1/generations/{id}` in the `{data, err}` envelope."""

    STATUS_PATH = "/pub/v1/generations/{job_id}"
    WORDS: ClassVar[Mapping[str, str]] = {
        "running": "pending", "completed": "success", "failed": "failed",
    }
    ERRORS: ClassVar[Mapping[str, tuple[str, str]]] = {
        "unauthorized": ("UNAUTHORIZED", "Invalid API key"),
        "not_found": ("NOT_FOUND", "Generation not found"),
        "rate_limited": ("RATE_LIMITED", "Too many requests"),
        "server_error": ("INTERNAL_ERROR", "Something went wrong, please try again"),
        "overloaded": ("SERVICE_UNAVAILABLE", "Service unavailable"),
    }

    def set_media(
        self,
        job_id: str,
        media: Sequence[tuple[str, str | None]],
        *,
        running_polls: int = 0,
        running_for_s: float = 0.0,
    ) -> FakeJob:
        """A batch exactly as given: `(status word, url or None)` per media item (all `pending`
        while running)."""
        job = self.set_job(
            job_id, state="completed", running_polls=running_polls, running_for_s=running_for_s
        )
        with self.lock:
            job.media = list(media)
        return job

    def authorized(self, headers: Mapping[str, str]) -> bool:
        return headers.get("x-api-key") == self.api_key

    def error_body(self, code: str, message: str) -> Any:
        return {"data": None, "err": {"code": code, "message": message}}

    def job_body(self, job_id: str, job: FakeJob, word: str) -> Any:
        items = [
            {"id": f"{job_id}_m{i}", "status": status, **({"url": url} if url else {})}
            for i, (status, url) in enumerate(self._media(job, word))
        ]
        return {"data": {"generation_id": job_id, "media": items, **job.fields}, "err": None}

    def _media(self, job: FakeJob, word: str) -> list[tuple[str, str | None]]:
        running = word == self.WORDS["running"]
        if job.media is not None and not running:
            return job.media
        count = len(job.media if job.media is not None else job.outputs) or 1
        if running:
            return [("pending", None)] * count
        if word == "success":
            return [("success", url) for url in job.outputs]
        return [(word, None)]


class FakeRevid(FakeProvider):
    """RevidAPI's `GET /v1/jobs/{id}` → `{status, result}`; can be told to be overloaded."""

    STATUS_PATH = "/v1/jobs/{job_id}"
    ERRORS: ClassVar[Mapping[str, tuple[str, str]]] = {
        **FakeProvider.ERRORS,
        "not_found": ("Not Found", "Job not found"),
        "overloaded": ("Service Unavailable", "Model provider is overloaded or under maintenance."),
    }

    def overload(self, times: int) -> None:
        """Answer the next `times` requests 503 (the model provider is overloaded)."""
        self.fail(times, status=503)

    def job_body(self, job_id: str, job: FakeJob, word: str) -> Any:
        result = job.outputs[0] if word == "completed" and job.outputs else None
        body: dict[str, Any] = {"status": word, "result": result}
        if job.error is not None and word != "completed":
            body["error"] = job.error
        body.update(job.fields)
        return body


class FakeGenly(FakeProvider):
    """Genly ReRender's `GET /api/renders/{id}` → a render with `phase`."""

    STATUS_PATH = "/api/renders/{job_id}"
    ERRORS: ClassVar[Mapping[str, tuple[str, str]]] = {
        **FakeProvider.ERRORS,
        "not_found": ("Not found", "Render not found"),
    }

    def error_body(self, code: str, message: str) -> Any:
        return {"error": message}

    def job_body(self, job_id: str, job: FakeJob, word: str) -> Any:
        outputs = [
            {"name": f"image_{i}", "type": "image", "desc": "Output image", "cover_src": url,
             "cover_width": 1024, "cover_height": 1024}
            for i, url in enumerate(job.outputs if word == "completed" else [])
        ]
        misc = {"error": job.error} if job.error is not None and word != "completed" else {}
        return {
            "_id": job_id, "workflow_id": "674829a60a1c7e0df43198b8", "inputs": [],
            "outputs": outputs, "phase": word, "is_sample": False, "is_public": False,
            "created_at": int(job.created_at), "updated_at": int(time.time()), "misc": misc,
            **job.fields,
        }


FAKES: dict[str, type[FakeProvider]] = {
    "rendergrid": FakeRendergrid,
    "renderful": FakeRenderful,
    "rendernet": FakeRenderNet,
    "revid": FakeRevid,
    "genly": FakeGenly,
}
