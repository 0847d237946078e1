"""The admin API under /v1: bearer `admin_token`, JSON in and out.

Every route needs `Authorization: Bearer <server.admin_token>` (compared in constant time),
except the OpenAPI document at /v1/openapi.json that describes them (receiver.openapi); without
a configured token the whole API is off and answers 404. Lists answer
`{"items": [...], "next_cursor": "…" | null}`; pass `cursor` back to get the next page. Bad
parameters are 400 `invalid_request` naming the parameter, never a 500.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver import openapi
from receiver.core.errors import Conflict, InvalidRequest, NotFound, PayloadInvalid, Unauthorized
from receiver.openapi import MAX_DEADLINE_S, MAX_PAGE
from receiver.poller import NotPollable
from receiver.replay import Replayer, ReplayRequest, delivery_status, event_filter, sink_list
from receiver.store import JOB_STATES

if TYPE_CHECKING:
    from receiver.app import Hookyard

Handler = Callable[[Request], Awaitable[Response]]
_MAX_ID = 2**63 - 1  # SQLite's INTEGER


def routes(service: Hookyard) -> list[Route]:
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
    def __init__(self, service: Hookyard) -> None:
        self.service = service
        self.replayer = Replayer(
            service.store, service.ingest.router.sinks_for, service.settings.sinks
        )

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
        return JSONResponse(event)

    async def replay_event(self, request: Request) -> Response:
        body = await json_object(request, empty_ok=True)
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
        asked = ReplayRequest.from_json(await json_object(request))
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
        return JSONResponse({"items": rows[:limit], "next_cursor": cursor})

    async def retry(self, request: Request) -> Response:
        raw = request.path_params["delivery_id"]
        delivery_id = int(raw) if raw.isdigit() and len(raw) <= 19 else 0
        if not 0 < delivery_id <= _MAX_ID:
            raise NotFound(f"no delivery {raw!r}")
        try:
            row, changed = await self.service.store.retry_delivery(delivery_id, time.time())
        except KeyError:
            raise NotFound(f"no delivery {delivery_id}") from None
        if not changed:
            raise Conflict(f"delivery {delivery_id} is pending already; it will be sent when due")
        self.service.delivery.wake([row["sink"]])
        return JSONResponse(row, status_code=202)

    # -- watched jobs ----------------------------------------------------------------------

    async def watch_job(self, request: Request) -> Response:
        body = await json_object(request)
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
        return JSONResponse(job.to_json(), status_code=201 if new else 200)

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
        return JSONResponse({"items": [j.to_json() for j in jobs], "next_cursor": cursor})

    async def delete_job(self, request: Request) -> Response:
        source, job_id = request.path_params["source"], request.path_params["job_id"]
        if not await self.service.store.delete_job(source, job_id):
            raise NotFound(f"no watched job {job_id!r} at source {source!r}")
        self.service.poller.watched.pop((source, job_id), None)
        return Response(status_code=204)


async def json_object(request: Request, *, empty_ok: bool = False) -> dict[str, Any]:
    raw = await request.body()
    if empty_ok and not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise PayloadInvalid("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise PayloadInvalid("the body must be a JSON object")
    try:  # "\ud800" is valid JSON but no text the database can store
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise PayloadInvalid("the body contains an unpaired UTF-16 surrogate") from None
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Python's json accepts them


def _required_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{key} is required and must be a non-empty string")
    return value


def page_size(value: str | None, default: int = 100) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return int(value)


def _cursor_id(value: str) -> int:
    if not value.isdigit() or len(value) > 19:
        raise InvalidRequest("cursor is not one this API gave out")
    return int(value)


def encode_cursor(position: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, parts: int) -> list[str] | None:
    """The position a cursor stands for; a cursor we did not make is a 400."""
    if not cursor:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        raise InvalidRequest("cursor is not one this API gave out") from None
    if (
        not isinstance(position, list)
        or len(position) != parts
        or not all(isinstance(p, str) for p in position)
    ):
        raise InvalidRequest("cursor is not one this API gave out")
    return position
