"""The admin API under /v1: bearer `admin_token`, JSON in and out.

Every route needs `Authorization: Bearer <server.admin_token>` (compared in constant time),
except the OpenAPI document at /v1/openapi.json that describes them (receiver.openapi); without
a configured token the whole API is off and answers 404. Lists answer
`{"items": [...], "next_cursor": "…" | null}`; pass `cursor` back to get the next page. Bad
parameters are 400 `invalid_request` naming the parameter, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver import openapi
from receiver.core import jsonx, masking
from receiver.core.errors import (
    BodyTooLarge,
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadInvalid,
    Unauthorized,
)
from receiver.openapi import MAX_DEADLINE_S, MAX_PAGE
from receiver.poller import NotPollable
from receiver.replay import ReplayRequest, delivery_status, event_filter, sink_list
from receiver.service import Service
from receiver.store import JOB_STATES

Handler = Callable[[Request], Awaitable[Response]]
_MAX_ID = 2**63 - 1  # SQLite's INTEGER


def routes(service: Service) -> list[Route]:
    """The /v1 routes, each behind the token check (the OpenAPI document is public)."""
    api = AdminApi(service)
    guard = _Guard(service.settings.server.admin_token)
    return [
        Route("/v1/openapi.json", guard.public(api.openapi), methods=["GET"]),
        Route("/v1/events", guard(api.list_events), methods=["GET"]),
        Route("/v1/events/{event_id}", guard(api.get_event), methods=["GET"]),
        Route("/v1/events/{event_id}/replay", guard(api.replay_event), methods=["POST"]),
        Route("/v1/replay", guard(api.replay), methods=["POST"]),
        Route("/v1/deliveries", guard(api.list_deliveries), methods=["GET"]),
        Route("/v1/deliveries/{delivery_id}/retry", guard(api.retry), methods=["POST"]),
        Route("/v1/jobs", guard(api.watch_job), methods=["POST"]),
        Route("/v1/jobs", guard(api.list_jobs), methods=["GET"]),
        Route("/v1/jobs/{source}/{job_id:path}", guard(api.delete_job), methods=["DELETE"]),
    ]


class _Guard:
    def __init__(self, token: str | None) -> None:
        self.token = token.encode() if token else None

    def __call__(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            self.check(request.headers.get("authorization", ""))
            return await handler(request)

        return guarded

    def public(self, handler: Handler) -> Handler:
        """No token needed, but off with the rest of the API."""

        async def unguarded(request: Request) -> Response:
            self.check_on()
            return await handler(request)

        return unguarded

    def check_on(self) -> None:
        if self.token is None:
            raise NotFound("the admin API is off: set server.admin_token to turn it on")

    def check(self, header: str) -> None:
        self.check_on()
        assert self.token is not None
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.token
        ):
            raise Unauthorized("send Authorization: Bearer <server.admin_token>")


class AdminApi:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.replayer = service.replayer
        self.secrets = masking.ordered(service.settings.secret_values())

    def scrub(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return scrub(rows, self.secrets)

    async def openapi(self, _: Request) -> Response:
        return JSONResponse(openapi.DOCUMENT)

    # -- events ----------------------------------------------------------------------------

    async def list_events(self, request: Request) -> Response:
        query = request.query_params
        where = event_filter(query)
        before = decode_cursor(query.get("cursor"), parts=1)
        limit = page_size(query.get("limit"))
        events = await self.service.store.list_events(
            where, before[0] if before else None, limit + 1
        )
        cursor = encode_cursor([events[limit - 1]["id"]]) if len(events) > limit else None
        return JSONResponse({"items": events[:limit], "next_cursor": cursor})

    async def get_event(self, request: Request) -> Response:
        event_id = request.path_params["event_id"]
        event = await self.service.store.get_event(event_id)
        if event is None:
            raise NotFound(f"no event {event_id!r}")
        self.scrub(event["deliveries"])
        return JSONResponse(event)

    async def replay_event(self, request: Request) -> Response:
        body = await self.json_object(request, empty_ok=True)
        unknown = sorted(set(body) - {"sinks"})
        if unknown:
            raise InvalidRequest(f"unknown field {unknown[0]!r}; the only field is sinks")
        event_id = request.path_params["event_id"]
        made = await self.replayer.replay_event(event_id, sink_list(body.get("sinks")))
        self.service.delivery.wake(sink for _, sink in made)
        return JSONResponse(
            {"event_id": event_id, "deliveries": [{"id": i, "sink": s} for i, s in made]},
            status_code=202,
        )

    async def replay(self, request: Request) -> Response:
        asked = ReplayRequest.from_json(await self.json_object(request))
        scope, counts = await self.replayer.plan(asked)
        if asked.dry_run:
            return JSONResponse(counts.to_json())
        done = await self.replayer.run(scope)
        self.service.delivery.wake(self.replayer.sinks_of(scope))
        return JSONResponse(done.to_json(), status_code=202)

    # -- deliveries ------------------------------------------------------------------------

    async def list_deliveries(self, request: Request) -> Response:
        query = request.query_params
        status = delivery_status(query.get("status"), "status")
        sink = query.get("sink")
        if sink is not None and not sink:
            raise InvalidRequest("sink must be a non-empty string")
        after = decode_cursor(query.get("cursor"), parts=1)
        limit = page_size(query.get("limit"))
        rows = await self.service.store.list_deliveries(
            status, sink, _cursor_id(after[0]) if after else None, limit + 1
        )
        cursor = encode_cursor([str(rows[limit - 1]["id"])]) if len(rows) > limit else None
        return JSONResponse({"items": self.scrub(rows[:limit]), "next_cursor": cursor})

    async def retry(self, request: Request) -> Response:
        raw = request.path_params["delivery_id"]
        try:
            delivery_id = jsonx.whole_number("delivery id", raw, 1, _MAX_ID)
        except jsonx.NumberInvalid:
            raise NotFound(f"no delivery {raw!r}: delivery ids are whole numbers") from None
        try:
            row, changed = await self.service.delivery.retry(delivery_id, time.time())
        except KeyError:
            raise NotFound(f"no delivery {delivery_id}") from None
        if not changed:
            raise Conflict(f"delivery {delivery_id} is pending already; it will be sent when due")
        return JSONResponse(self.scrub([row])[0], status_code=202)

    # -- watched jobs ----------------------------------------------------------------------

    async def watch_job(self, request: Request) -> Response:
        body = await self.json_object(request)
        source = _required_str(body, "source")
        job_id = _required_str(body, "job_id")
        deadline = body.get("deadline_s")
        if deadline is not None and (
            isinstance(deadline, bool)
            or not isinstance(deadline, int | float)
            or not 0 < deadline <= MAX_DEADLINE_S
        ):
            raise InvalidRequest(
                f"deadline_s must be a positive number of seconds, at most {MAX_DEADLINE_S}"
            )
        metadata = body.get("metadata", {})
        if not isinstance(metadata, dict):
            raise InvalidRequest("metadata must be a JSON object")
        try:
            job, new = await self.service.poller.watch(
                source, job_id, deadline_s=deadline, metadata=metadata
            )
        except NotPollable as exc:
            raise InvalidRequest(str(exc)) from None
        return JSONResponse(self.scrub([job.to_json()])[0], status_code=201 if new else 200)

    async def list_jobs(self, request: Request) -> Response:
        query = request.query_params
        state = query.get("state")
        if state is not None and state not in JOB_STATES:
            raise InvalidRequest(f"state must be one of {', '.join(JOB_STATES)}")
        after = decode_cursor(query.get("cursor"), parts=2)
        limit = page_size(query.get("limit"))
        jobs = await self.service.store.list_jobs(
            query.get("source"), state, (after[0], after[1]) if after else None, limit + 1
        )
        more = len(jobs) > limit
        jobs = jobs[:limit]
        cursor = encode_cursor([jobs[-1].source, jobs[-1].job_id]) if more else None
        items = self.scrub([j.to_json() for j in jobs])
        return JSONResponse({"items": items, "next_cursor": cursor})

    async def delete_job(self, request: Request) -> Response:
        source, job_id = request.path_params["source"], request.path_params["job_id"]
        if not await self.service.store.delete_job(source, job_id):
            raise NotFound(f"no watched job {job_id!r} at source {source!r}")
        return Response(status_code=204)


    async def json_object(self, request: Request, *, empty_ok: bool = False) -> dict[str, Any]:
        """The body as a JSON object, read by the one parser of outside JSON and capped at
        server.max_body_bytes. A number too large for a double is refused naming its field:
        stored, it could never be shown or sent as JSON."""
        raw = await _capped_body(request, self.service.settings.server.max_body_bytes)
        if empty_ok and not raw.strip():
            return {}
        try:
            body = jsonx.loads(raw, numbers=jsonx.REFUSE)
        except jsonx.OutOfRange as exc:
            raise InvalidRequest(str(exc)) from None
        except jsonx.JSONError as exc:
            raise PayloadInvalid(f"the body must be a JSON object: {str(exc)[:200]}") from None
        if not isinstance(body, dict):
            raise PayloadInvalid("the body must be a JSON object")
        return body


async def _capped_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes (server.max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def scrub(rows: list[dict[str, Any]], secrets: tuple[str, ...]) -> list[dict[str, Any]]:
    """Error texts of deliveries, attempts and jobs without a configured secret (`secrets`
    from masking.ordered). New attempt errors are masked before they are stored; this covers
    rows stored before that, and job errors (a poll's network error may quote base_url)."""
    for row in rows:
        for item in (row, *row.get("attempt_log", ())):
            for key in ("last_error", "error", "last_status"):
                if isinstance(item.get(key), str):
                    item[key] = masking.mask_secrets(item[key], secrets)
    return rows


def _required_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{key} is required and must be a non-empty string")
    return value


def page_size(value: str | None, default: int = 100) -> int:
    if value is None:
        return default
    try:
        return jsonx.whole_number("limit", value, 1, MAX_PAGE)
    except jsonx.NumberInvalid as exc:
        raise InvalidRequest(str(exc)) from None


def _cursor_id(value: str) -> int:
    try:
        return jsonx.whole_number("cursor", value, 0, _MAX_ID)
    except jsonx.NumberInvalid:
        raise InvalidRequest("cursor is not one this API gave out") from None


def encode_cursor(position: list[Any]) -> str:
    return base64.urlsafe_b64encode(jsonx.dumps(position)).decode().rstrip("=")


def decode_cursor(cursor: str | None, parts: int) -> list[str] | None:
    """The position a cursor stands for; a cursor we did not make is a 400."""
    if not cursor:
        return None
    try:
        packed = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = jsonx.loads(packed, numbers=jsonx.REFUSE)
    except (binascii.Error, ValueError):  # not base64 (or not ASCII), not JSON
        raise InvalidRequest("cursor is not one this API gave out") from None
    if (
        not isinstance(position, list)
        or len(position) != parts
        or not all(isinstance(p, str) for p in position)
    ):
        raise InvalidRequest("cursor is not one this API gave out")
    return position
