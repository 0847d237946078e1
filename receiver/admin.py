"""The admin API under /v1: bearer `admin_token`, JSON in and out.

Every route needs `Authorization: Bearer <server.admin_token>` (compared in constant time);
without a configured token the whole API is off and answers 404. Lists answer
`{"items": [...], "next_cursor": "…" | null}`; pass `cursor` back to get the next page.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.errors import NotFound, PayloadInvalid, RequestError, Unauthorized
from receiver.poller import NotPollable
from receiver.store import JOB_STATES

if TYPE_CHECKING:
    from receiver.app import Hookyard

Handler = Callable[[Request], Awaitable[Response]]
MAX_PAGE = 500


class InvalidRequest(RequestError):
    status = 400
    code = "invalid_request"


def routes(service: Hookyard) -> list[Route]:
    """The /v1 routes, each behind the token check."""
    api = AdminApi(service)
    guard = _Guard(service.settings.server.admin_token)
    return [
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

    def check(self, header: str) -> None:
        if self.token is None:
            raise NotFound("the admin API is off: set server.admin_token to turn it on")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.token
        ):
            raise Unauthorized("send Authorization: Bearer <server.admin_token>")


class AdminApi:
    def __init__(self, service: Hookyard) -> None:
        self.service = service

    async def watch_job(self, request: Request) -> Response:
        body = await json_object(request)
        source = _required_str(body, "source")
        job_id = _required_str(body, "job_id")
        deadline = body.get("deadline_s")
        if deadline is not None and (
            isinstance(deadline, bool) or not isinstance(deadline, int | float) or deadline <= 0
        ):
            raise InvalidRequest("deadline_s must be a positive number of seconds")
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


async def json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise PayloadInvalid("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise PayloadInvalid("the body must be a JSON object")
    return body


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
