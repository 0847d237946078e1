"""`POST /hooks/{source}`: the provider-facing endpoint, as a plain ASGI handler.

This is the hot path (every webhook of every provider), so it speaks ASGI directly instead of
going through Starlette's request, routing and response objects, which cost more than the
verification itself. The steps are the contract of DESIGN.md's status table, in order: source
(404), method (405), size (413), content type (415), body, signature (401), JSON (400),
provider parse (never fails: unreadable bodies are `webhook.unrecognized`), store (503), 200.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.types import Receive, Scope, Send

from handlers.providers.base import Provider, WebhookContext
from receiver import logs
from receiver.core import jsonx, signing
from receiver.core.errors import (
    BodyTooLarge,
    HookyardError,
    NotFound,
    PayloadInvalid,
    RequestError,
    UnsupportedMediaType,
)
from receiver.ingest import Ingest
from receiver.metrics import Metrics
from receiver.poller import NotPollable, Poller
from receiver.settings import SourceSettings

log = structlog.get_logger("hookyard.http")

PREFIX = "/hooks/"
# Request headers never stored with an event: credentials of the sender, not event data.
UNSTORED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


class MethodNotAllowed(RequestError):
    status = 405
    code = "method_not_allowed"


class ClientGone(Exception):
    """The client hung up before sending the whole body: there is nobody to answer."""


@dataclass(frozen=True, slots=True)
class Intake:
    """One configured source, ready to receive: its settings, verifier and provider."""

    settings: SourceSettings
    verifier: signing.Verifier
    provider: Provider


class WebhookEndpoint:
    """ASGI handler for every path under /hooks/."""

    def __init__(
        self,
        intakes: Mapping[str, Intake],
        ingest: Ingest,
        poller: Poller,
        max_body_bytes: int,
        polled_only: Sequence[str] = (),
        metrics: Metrics | None = None,
    ) -> None:
        self.intakes = intakes
        self.ingest = ingest
        self.poller = poller
        self.max_body_bytes = max_body_bytes
        self.polled_only = frozenset(polled_only)
        self.metrics = metrics or Metrics(intakes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = _header_dict(scope)
        request_id = request_id_of(headers.get("x-request-id")) or new_request_id()
        source = scope["path"][len(PREFIX) :]
        extra: list[tuple[bytes, bytes]] = []
        try:
            status, answer = await self.handle(source, scope, receive, headers, request_id)
        except ClientGone:
            return
        except HookyardError as exc:
            status, answer = exc.status, exc.to_json()
            extra = [(b"allow", b"POST")] if exc.status == 405 else []
            _log_refusal(scope, exc, request_id)
            self.metrics.webhook_refused(source, exc.code, started)
        except Exception as exc:
            log.error("request.crashed", path=scope["path"], request_id=request_id, exc_info=exc)
            self.metrics.webhook_refused(source, "internal_error", started)
            status, extra = 500, []
            answer = {
                "error": "internal_error",
                "message": "hookyard failed on this request; the logs have the details",
            }
        else:
            if status == 200:
                self.metrics.webhook_accepted(source, bool(answer["duplicate"]), started)
            else:
                self.metrics.webhook_confirming(source)
        await respond(send, status, answer, request_id, extra)

    async def handle(
        self, name: str, scope: Scope, receive: Receive, headers: Mapping[str, str],
        request_id: str,
    ) -> tuple[int, dict[str, Any]]:
        intake = self.intakes.get(name)
        if intake is None:
            raise NotFound(self._unknown(name))
        if scope["method"] != "POST":
            raise MethodNotAllowed(f"{scope['method']} {scope['path']}: webhooks are POSTed")
        check_content_type(headers.get("content-type"))
        body = await read_body(receive, headers.get("content-length"), self.max_body_bytes)
        verified = await intake.verifier.verify(headers, body)
        ctx = WebhookContext(
            source=name,
            provider=intake.provider.name,
            headers=headers,
            body=body,
            payload=parse_json(body),
            message_id=verified.message_id,
        )
        if intake.settings.confirm == "fetch":
            return await self._confirm(intake, ctx, request_id)
        event = intake.provider.parse_webhook(ctx)
        kept = {k: v for k, v in headers.items() if k not in UNSTORED_HEADERS}
        stored = await self.ingest.submit(event, body, kept)
        logs.hot_info(
            log,
            "webhook.accepted",
            source=name,
            event_id=stored.event_id,
            type=event.type,
            job_id=event.job_id,
            duplicate=stored.duplicate,
            deliveries=stored.deliveries,
            request_id=request_id,
        )
        return 200, {"event_id": stored.event_id, "duplicate": stored.duplicate}

    def _unknown(self, name: str) -> str:
        if name in self.polled_only:
            return (
                f"source {name!r} receives no webhooks: its provider sends none, so "
                "hookyard polls it (register jobs with POST /v1/jobs)"
            )
        return (
            f"no source named {name!r} is configured; webhook URLs are "
            "/hooks/<source name from [sources.NAME]>"
        )

    async def _confirm(
        self, intake: Intake, ctx: WebhookContext, request_id: str
    ) -> tuple[int, dict[str, Any]]:
        """Confirm-by-fetch: the callback is only a hint; the event will come from the
        provider's own status API, asked at once (a job it does not know makes no event)."""
        poll = intake.provider.poll
        job_id = poll.job_id_of(ctx.payload) if poll is not None else None
        if not job_id:
            raise PayloadInvalid(
                "cannot tell which job this callback is about: the body has "
                "no job id where the provider puts it"
            )
        try:
            await self.poller.watch(ctx.source, job_id, confirm=True)
        except NotPollable as exc:
            raise PayloadInvalid(str(exc)) from None
        log.info("webhook.confirming", source=ctx.source, job_id=job_id, request_id=request_id)
        return 202, {"job_id": job_id, "confirming": True}


def _header_dict(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name; the first of repeated headers wins."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        if name not in headers:
            headers[name] = raw_value.decode("latin-1")
    return headers


_REQUEST_ID_PREFIX = os.urandom(4).hex()
_request_numbers = itertools.count(1)


def new_request_id() -> str:
    """A request id unique to this process run: a random prefix and a counter (no syscall)."""
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers):08x}"


def request_id_of(value: str | None) -> str | None:
    """The caller's X-Request-Id when it is short and plain enough to echo and log."""
    if (
        value
        and len(value) <= 64
        and value.isascii()
        and value.replace("-", "").replace("_", "").isalnum()
    ):
        return value
    return None


def check_content_type(value: str | None) -> None:
    media = (value or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        shown = f"{media!r}" if media else "no content type"
        raise UnsupportedMediaType(
            f"webhooks must be JSON: send Content-Type: application/json, not {shown}"
        )


def _declared_over(declared: str, limit: int) -> bool:
    """Whether a Content-Length of ASCII digits says more than `limit` (junk says nothing)."""
    if not declared.isascii() or not declared.isdigit():
        return False
    digits = declared.lstrip("0")  # leading zeros are allowed (RFC 9110: 1*DIGIT)
    return len(digits) > len(str(limit)) or int(digits or "0") > limit


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The body, refused as soon as it is known to pass `limit` (before reading it whole).
    A Content-Length that is not ASCII digits is left to the server that framed the body
    (`²` is a digit to str.isdigit(), not to int(); int() refuses over 4,300 digits)."""
    if declared is not None and _declared_over(declared, limit):
        raise BodyTooLarge(
            f"the body is {declared[:20]}{'…' if len(declared) > 20 else ''} bytes; this "
            f"server takes at most {limit} (server.max_body_bytes)"
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes (server.max_body_bytes)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """The verified body as JSON (receiver.core.jsonx): a number too large for a double reads
    as null (the raw bytes keep it), anything that is not strict JSON is a 400."""
    try:
        return jsonx.loads(body, numbers=jsonx.NULL)
    except jsonx.JSONError as exc:
        raise PayloadInvalid(f"the body is not valid JSON: {str(exc)[:200]}") from None


async def respond(
    send: Send,
    status: int,
    answer: Mapping[str, Any],
    request_id: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = jsonx.dumps(answer)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _log_refusal(scope: Scope, exc: HookyardError, request_id: str) -> None:
    level = log.warning if exc.status < 500 else log.error
    level(
        "request.refused",
        path=scope["path"],
        status=exc.status,
        error=exc.code,
        message=exc.message,
        request_id=request_id,
    )
