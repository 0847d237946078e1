"""The service: its parts, their lifecycle, and the HTTP routes.

`POST /hooks/{source}` is served by receiver.hooks (plain ASGI, the hot path); everything else
(`/healthz`, `/readyz`, and the admin API) by a Starlette app behind the same request-id rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from handlers import providers
from receiver import admin, ui
from receiver.core import signing
from receiver.core.errors import ConfigError, HookyardError, StoreUnavailable, Unauthorized
from receiver.delivery import Delivery
from receiver.hooks import PREFIX, Intake, WebhookEndpoint, new_request_id, request_id_of
from receiver.ingest import Ingest
from receiver.metrics import CONTENT_TYPE, Metrics
from receiver.poller import Poller
from receiver.replay import Replayer
from receiver.retention import Pruner
from receiver.router import Router
from receiver.settings import Settings, SourceSettings
from receiver.store import Store, open_store

log = structlog.get_logger("hookyard.http")

READY_CACHE_S = 1.0  # /readyz probes the store at most this often
READY_PROBE_S = 2.0  # a write probe slower than this is "not ready"
# While this process's own ingest keeps committing, idle loops are nudged at most this often:
# its own rows already woke them (Ingest listeners), every nudge costs each loop a read, and at
# one per 15 ms poll those reads cost `serve` ~20 µs of its event loop per webhook
# (bench/RESULTS.md). A process that stores no events (a worker) is nudged on every poll
# that sees a change, so rows from web processes reach it within one poll.
NUDGE_GAP_S = 0.05


class Hookyard:
    """The running service: settings, store, ingest and delivery, shared by the routes.

    `worker`: this process also runs delivery and polling (the embedded default). A web-only
    process (`serve --no-worker`) stores and answers; the worker processes see its rows through
    the store's change notifications."""

    def __init__(
        self, settings: Settings, store: Store | None = None, *, worker: bool = True
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.store = store or open_store(settings.server.database)
        self.ingest = Ingest(self.store, Router(settings.routes))
        # Provider polls share one pool; each sink gets its own (receiver.delivery).
        self.http = httpx.AsyncClient(
            follow_redirects=False,
            headers={"User-Agent": "hookyard"},
            limits=httpx.Limits(max_connections=64),
        )
        self.metrics = Metrics(settings.sources)
        self._ready_cache: tuple[float, str | None] | None = None
        self._ready_lock = asyncio.Lock()
        self.delivery = Delivery(settings.sinks, self.store, metrics=self.metrics)
        self.poller = Poller(settings, self.store, self.ingest, self.http, metrics=self.metrics)
        self.replayer = Replayer(self.store, self.ingest.router.sinks_for, settings.sinks)
        max_age_s = settings.retention.max_age_s
        self.pruner = (
            Pruner(self.store, max_age_s, self.metrics) if max_age_s is not None else None
        )
        self.ingest.listeners.append(self.delivery.events_stored)
        receiving = {n: s for n, s in settings.sources.items() if s.receives_webhooks}
        intakes = {
            name: Intake(src, _verifier(src), providers.PROVIDERS[src.provider])
            for name, src in receiving.items()
        }
        self.webhooks = WebhookEndpoint(
            intakes,
            self.ingest,
            self.poller,
            settings.server.max_body_bytes,
            polled_only=[n for n in settings.sources if n not in receiving],
            metrics=self.metrics,
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, _: object = None) -> AsyncIterator[None]:
        await self.store.open()
        await self.ingest.start()
        follower: asyncio.Task[None] | None = None
        pruning: asyncio.Task[None] | None = None
        if self.worker:
            await self.delivery.start()
            await self.poller.start()
            follower = asyncio.create_task(self._follow_changes(), name="hookyard-follower")
            if self.pruner is not None:
                pruning = asyncio.create_task(self.pruner.run(), name="hookyard-retention")
        log.info(
            "hookyard.started",
            sources=sorted(self.settings.sources),
            sinks=sorted(self.settings.sinks),
            database=self.settings.server.database,
            worker=self.worker,
        )
        try:
            yield
        finally:
            if pruning is not None:
                pruning.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pruning
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
                await self.poller.stop()
            await self.ingest.stop()
            self.metrics.flush()  # the last second's webhooks, for a multiprocess scrape
            if self.worker:
                await self.delivery.stop()
            await self.http.aclose()
            await self.store.close()
            log.info("hookyard.stopped")

    async def _follow_changes(self) -> None:
        """Wake idle sink runners and the poller when anyone commits to the store: rows that
        another process (a web worker, the CLI) added are sent within tens of milliseconds.
        While this process's own ingest is busy, commits during the gap after a nudge are
        covered by the next one, sent when the gap ends: the loops look after it, so they see
        all of them."""
        nudged_at = float("-inf")
        while True:
            try:
                changed = await self.store.wait_for_change(1.0)
                if changed:  # often our own commits: a look, not a claim, unless due
                    now = time.monotonic()
                    gap = nudged_at + NUDGE_GAP_S - now
                    own_busy = now - self.ingest.committed_at < NUDGE_GAP_S
                    if gap > 0 and own_busy:
                        await asyncio.sleep(gap)
                    nudged_at = time.monotonic()
                    self.delivery.nudge()
                    self.poller.nudge()
            except StoreUnavailable:
                await asyncio.sleep(1.0)  # readiness reports the store; keep following
            except Exception as exc:  # a bug must not end cross-process wake-ups for good
                log.error("follower.failed", error=repr(exc)[:300], retry_in_s=1.0)
                await asyncio.sleep(1.0)

    async def healthz(self, _: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_text(self, _: Request) -> Response:
        return Response(await self.metrics.render(self._refresh_gauges), media_type=CONTENT_TYPE)

    async def _refresh_gauges(self, m: Metrics) -> None:
        pending, oldest = await self.store.pending_stats()
        m.pending.set(pending)
        m.oldest_pending.set(max(0.0, time.time() - oldest) if oldest is not None else 0.0)
        m.jobs_watched.set(await self.store.count_jobs("watching"))
        m.database_bytes.set(await self.store.database_size())

    async def readyz(self, _: Request) -> Response:
        problems = []
        if not self.ingest.running:
            problems.append("the event writer is not running")
        problem = await self._store_problem()
        if problem:
            problems.append(problem)
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def _store_problem(self) -> str | None:
        """Why the store cannot take a write now (None: it can). Ready means a webhook would
        be stored, so the probe is a write (see Store.ping), done at most once per
        READY_CACHE_S however often a load balancer asks."""
        now = time.monotonic()
        cached = self._ready_cache
        if cached is not None and now - cached[0] < READY_CACHE_S:
            return cached[1]
        async with self._ready_lock:  # one probe at a time; the others take its result
            cached = self._ready_cache
            if cached is not None and time.monotonic() - cached[0] < READY_CACHE_S:
                return cached[1]
            problem = None
            try:
                async with asyncio.timeout(READY_PROBE_S):
                    await self.store.ping()
            except TimeoutError:
                problem = f"the store took a write no sooner than {READY_PROBE_S:g} s"
            except Exception as exc:
                problem = f"the store cannot take a write: {type(exc).__name__}: {exc}"[:300]
            self._ready_cache = (time.monotonic(), problem)
            return problem


class App:
    """The ASGI entry point: /hooks/ to the webhook endpoint, the rest to Starlette."""

    def __init__(self, service: Hookyard, other: Starlette) -> None:
        self.service = service
        self.other = other
        self.state = other.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            await self.service.webhooks(scope, receive, send)
        elif scope["type"] == "http":
            await _with_request_id(self.other, scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.other(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """The ASGI lifespan protocol around Hookyard.lifespan. Unlike Starlette's, a start-up
        that cannot work (a ConfigError such as an unusable database) is reported as its
        message alone, without a traceback: the server logs it and exits."""
        await receive()  # lifespan.startup
        started = False
        try:
            async with self.service.lifespan():
                started = True
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
        except ConfigError as exc:
            log.error("startup.failed", message=exc.message)
            kind = "shutdown" if started else "startup"
            await send({"type": f"lifespan.{kind}.failed", "message": exc.message})
            return
        except Exception as exc:
            log.error("startup.failed" if not started else "shutdown.failed", exc_info=exc)
            kind = "shutdown" if started else "startup"
            message = f"{type(exc).__name__}: {exc}"
            await send({"type": f"lifespan.{kind}.failed", "message": message})
            return
        await send({"type": "lifespan.shutdown.complete"})


def create_app(settings: Settings, store: Store | None = None, *, worker: bool = True) -> App:
    """The ASGI application for `settings` (the store defaults to the configured database);
    `worker=False` serves HTTP only (delivery and polling run in `hookyard worker`)."""
    service = Hookyard(settings, store, worker=worker)
    other = Starlette(
        routes=[
            Route("/healthz", service.healthz, methods=["GET"]),
            Route("/readyz", service.readyz, methods=["GET"]),
            Route("/metrics", service.metrics_text, methods=["GET"]),
            *admin.routes(service),
            *ui.routes(service),
        ],
        exception_handlers={
            HookyardError: _hookyard_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=service.lifespan,
    )
    other.state.hookyard = service
    return App(service, other)


def _verifier(source: SourceSettings) -> signing.Verifier:
    verifier = signing.build_verifier(
        source.signature,
        source.secrets,
        source.tolerance_s,
        where=f"sources.{source.name}.signature",
    )
    if isinstance(verifier, signing.FalVerifier) and not verifier.user_ids:
        # fal signs for all its customers with one key set: without an allow-list, another fal
        # customer can send this source valid webhooks about their own jobs.
        log.warning(
            "fal.any_user",
            source=source.name,
            fix=f"set [sources.{source.name}] signature.user_ids to your fal user id(s)",
        )
    return verifier


async def _with_request_id(app: Starlette, scope: Scope, receive: Receive, send: Send) -> None:
    """Every answer carries X-Request-Id (the caller's if sane), and so do the request's logs."""
    incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
    request_id = request_id_of(incoming.decode("latin-1")) or new_request_id()

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                *message.get("headers", ()),
                (b"x-request-id", request_id.encode()),
            ]
        await send(message)

    with structlog.contextvars.bound_contextvars(request_id=request_id):
        await app(scope, receive, send_with_id)


async def _hookyard_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HookyardError)
    level = log.warning if exc.status < 500 else log.error
    level(
        "request.refused",
        path=request.url.path,
        status=exc.status,
        error=exc.code,
        message=exc.message,
    )
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(
        {"error": code, "message": message}, status_code=exc.status_code, headers=exc.headers
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("request.crashed", path=request.url.path, exc_info=exc)
    return JSONResponse(
        {
            "error": "internal_error",
            "message": "hookyard failed on this request; the logs have the details",
        },
        status_code=500,
    )
