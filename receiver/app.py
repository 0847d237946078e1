"""The HTTP face: `POST /hooks/{source}`, `/healthz`, `/readyz` (DESIGN.md status table)."""

from __future__ import annotations

import contextlib
import json
import secrets as pysecrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handlers import providers
from handlers.providers.base import Provider, WebhookContext
from receiver import signing
from receiver.delivery import Delivery
from receiver.errors import (
    BodyTooLarge,
    HookyardError,
    NotFound,
    PayloadInvalid,
    UnsupportedMediaType,
)
from receiver.pipeline import Pipeline
from receiver.router import Router
from receiver.settings import Settings, SourceSettings
from receiver.store import Store, open_store

log = structlog.get_logger("hookyard.http")

# Request headers never stored with an event: credentials of the sender, not event data.
_UNSTORED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


@dataclass(frozen=True, slots=True)
class Intake:
    """One configured source, ready to receive: its settings, verifier and provider."""

    settings: SourceSettings
    verifier: signing.Verifier
    provider: Provider


class Hookyard:
    """The running service: settings, store and pipeline, shared by the routes."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or open_store(settings.server.database)
        self.pipeline = Pipeline(self.store, Router(settings.routes))
        self.delivery = Delivery(settings.sinks, self.store)
        self.pipeline.listeners.append(self.delivery.events_stored)
        self.intakes = {
            name: Intake(src, _verifier(src), providers.PROVIDERS[src.provider])
            for name, src in settings.sources.items()
        }

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        await self.store.open()
        await self.pipeline.start()
        await self.delivery.start()
        log.info(
            "hookyard.started", sources=sorted(self.intakes), database=self.settings.server.database
        )
        try:
            yield
        finally:
            await self.pipeline.stop()
            await self.delivery.stop()
            await self.store.close()
            log.info("hookyard.stopped")

    async def receive_webhook(self, request: Request) -> Response:
        name = request.path_params["source"]
        intake = self.intakes.get(name)
        if intake is None:
            raise NotFound(
                f"no source named {name!r} is configured; webhook URLs are "
                "/hooks/<source name from [sources.NAME]>"
            )
        _check_content_type(request.headers.get("content-type"))
        body = await _read_body(request, self.settings.server.max_body_bytes)
        verified = await intake.verifier.verify(request.headers, body)
        ctx = WebhookContext(
            source=name,
            provider=intake.provider.name,
            headers=request.headers,
            body=body,
            payload=_parse_json(body),
            message_id=verified.message_id,
        )
        event = intake.provider.parse_webhook(ctx)
        stored = await self.pipeline.ingest(event, body, _kept_headers(request.headers))
        log.info(
            "webhook.accepted",
            source=name,
            event_id=stored.event_id,
            type=event.type,
            job_id=event.job_id,
            duplicate=stored.duplicate,
            deliveries=stored.deliveries,
        )
        return JSONResponse({"event_id": stored.event_id, "duplicate": stored.duplicate})

    async def healthz(self, _: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, _: Request) -> Response:
        problems = []
        if not self.pipeline.running:
            problems.append("the event writer is not running")
        try:
            await self.store.ping()
        except Exception as exc:
            problems.append(f"the store does not answer: {type(exc).__name__}")
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})


def create_app(settings: Settings, store: Store | None = None) -> ASGIApp:
    """The ASGI application for `settings` (the store defaults to the configured database)."""
    service = Hookyard(settings, store)
    app = Starlette(
        routes=[
            Route("/hooks/{source}", service.receive_webhook, methods=["POST"]),
            Route("/healthz", service.healthz, methods=["GET"]),
            Route("/readyz", service.readyz, methods=["GET"]),
        ],
        exception_handlers={
            HookyardError: _hookyard_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=service.lifespan,
    )
    app.state.hookyard = service
    return RequestId(app)


def _verifier(source: SourceSettings) -> signing.Verifier:
    return signing.build_verifier(
        source.signature,
        source.secrets,
        source.tolerance_s,
        where=f"sources.{source.name}.signature",
    )


def _check_content_type(value: str | None) -> None:
    media = (value or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        shown = f"{media!r}" if media else "no content type"
        raise UnsupportedMediaType(
            f"webhooks must be JSON: send Content-Type: application/json, not {shown}"
        )


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to pass `limit` (before reading it whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(
            f"the body is {int(declared)} bytes; this server takes at most {limit} "
            "(server.max_body_bytes)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes (server.max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise PayloadInvalid(f"the body is not valid JSON: {detail}") from None


def _kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in _UNSTORED_HEADERS}


async def _hookyard_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HookyardError)
    level = "warning" if exc.status < 500 else "error"
    getattr(log, level)(
        "request.refused",
        path=request.url.path,
        status=exc.status,
        error=exc.code,
        message=exc.message,
    )
    return JSONResponse(exc.to_json(), status_code=exc.status)


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


class RequestId:
    """Gives every request an id (the caller's X-Request-Id if sane), in logs and the answer."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or pysecrets.token_hex(8)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id" and 0 < len(value) <= 64 and value.isascii():
            text: str = bytes(value).decode()
            if text.replace("-", "").replace("_", "").isalnum():
                return text
    return None
