"""The OpenAPI 3 document of the admin API, served at GET /v1/openapi.json (no token).

Written by hand next to receiver.admin, which it describes route by route; tests/test_openapi.py
validates it and runs schemathesis against a live server, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from receiver.core.events import EVENT_TYPES
from receiver.store import DELIVERY_STATUSES, JOB_STATES

MAX_PAGE = 500  # the largest `limit` of a list
MAX_DEADLINE_S = 366 * 86400  # the longest `deadline_s` of a watched job

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(type_: str, **more: Any) -> Schema:
    return {"type": type_, "nullable": True, **more}


def _object(required: list[str], **properties: Schema) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


def _list_of(item: str) -> Schema:
    return _object(
        ["items", "next_cursor"],
        items={"type": "array", "items": _ref(item)},
        next_cursor=_nullable("string", description="pass back as `cursor`; null on the last page"),
    )


STRING = {"type": "string"}
NUMBER = {"type": "number"}
INTEGER = {"type": "integer"}
TIME = {
    "anyOf": [
        {"type": "string", "example": "2026-11-22T10:00:59Z"},
        {"type": "number", "minimum": 0},
    ],
    "description": "ISO 8601 (a time without zone is UTC) or unix seconds",
}
SINKS = {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}

SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        ["error", "message"],
        error={"type": "string", "example": "invalid_request"},
        message={"type": "string"},
    ),
    "Event": _object(
        ["id", "type", "source", "provider", "job_id", "status", "received_at", "via"],
        id={"type": "string", "example": "evt_01JD0000000000000000000000"},
        type={"type": "string", "example": EVENT_TYPES[2]},
        source=STRING,
        provider=STRING,
        job_id=_nullable("string"),
        status=_nullable("string"),
        outputs={"type": "array", "items": STRING},
        error=_nullable("string"),
        cost=_nullable("number"),
        model=_nullable("string"),
        received_at={"type": "string", "example": "2026-11-22T10:00:59.123456Z"},
        via={"type": "string", "enum": ["webhook", "poll"]},
        idempotency_key=STRING,
        metadata={"type": "object"},
        raw={"description": "the provider's payload as received (only on GET /v1/events/{id})"},
    ),
    "Attempt": _object(
        ["started_at", "duration_ms", "status_code", "error", "outcome"],
        started_at=NUMBER,
        duration_ms=NUMBER,
        status_code=_nullable("integer"),
        error=_nullable("string"),
        outcome={"type": "string", "enum": list(DELIVERY_STATUSES)},
    ),
    "Delivery": _object(
        ["id", "event_id", "sink", "status", "attempts", "next_attempt_at", "cause", "replay_of"],
        id=INTEGER,
        event_id=STRING,
        sink=STRING,
        status={"type": "string", "enum": list(DELIVERY_STATUSES)},
        attempts=INTEGER,
        next_attempt_at=NUMBER,
        last_status_code=_nullable("integer"),
        last_error=_nullable("string"),
        cause={"type": "string", "enum": ["route", "replay"]},
        replay_of=_nullable("integer", description="the delivery this replay repeats"),
        created_at=NUMBER,
        updated_at=NUMBER,
    ),
    "DeliveryWithAttempts": {
        "allOf": [
            _ref("Delivery"),
            _object(["attempt_log"], attempt_log={"type": "array", "items": _ref("Attempt")}),
        ]
    },
    "EventWithDeliveries": {
        "allOf": [
            _ref("Event"),
            _object(
                ["raw", "deliveries"],
                deliveries={"type": "array", "items": _ref("DeliveryWithAttempts")},
                mirrors={"type": "array", "items": _ref("Mirror")},
            ),
        ]
    },
    "Mirror": _object(
        ["sink", "index", "bucket", "key", "content_type", "mirrored_at"],
        sink={"type": "string", "description": "the s3 sink that mirrored the output"},
        index={"type": "integer", "description": "the output's position in `outputs`"},
        bucket=STRING,
        key=STRING,
        content_type=STRING,
        mirrored_at=NUMBER,
    ),
    "Job": _object(
        ["source", "job_id", "state", "metadata", "created_at", "deadline_at", "next_poll_at"],
        source=STRING,
        job_id=STRING,
        state={"type": "string", "enum": list(JOB_STATES)},
        metadata={"type": "object"},
        created_at=NUMBER,
        deadline_at=NUMBER,
        next_poll_at=NUMBER,
        polls=INTEGER,
        last_status=_nullable("string"),
        last_error=_nullable("string"),
        updated_at=NUMBER,
    ),
    "EventList": _list_of("Event"),
    "DeliveryList": _list_of("Delivery"),
    "JobList": _list_of("Job"),
    "EventReplayRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"sinks": {**SINKS, "description": "default: the routes' sinks now"}},
    },
    "EventReplayResult": _object(
        ["event_id", "deliveries"],
        event_id=STRING,
        deliveries={
            "type": "array",
            "items": _object(["id", "sink"], id=INTEGER, sink=STRING),
        },
    ),
    "ReplayRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "source": {"type": "string", "minLength": 1},
            "type": {"type": "string", "minLength": 1},
            "job_id": {"type": "string", "minLength": 1},
            "since": {**TIME, "description": "received at or after (ISO 8601 or unix seconds)"},
            "until": {**TIME, "description": "received before (ISO 8601 or unix seconds)"},
            "delivery_status": {
                "type": "string",
                "enum": list(DELIVERY_STATUSES),
                "description": "replay the (event, sink) pairs whose latest delivery has "
                "this status; without it, the matching events to their routed sinks",
            },
            "sinks": {
                **SINKS,
                "description": "only these sinks (with delivery_status), or "
                "these sinks instead of the routed ones",
            },
            "dry_run": {"type": "boolean", "default": False},
        },
    },
    "ReplayCounts": _object(
        ["dry_run", "events", "deliveries"],
        dry_run={"type": "boolean"},
        events=INTEGER,
        deliveries=INTEGER,
    ),
    "WatchJobRequest": _object(
        ["source", "job_id"],
        source={"type": "string", "minLength": 1},
        job_id={"type": "string", "minLength": 1},
        deadline_s={
            "type": "number",
            "exclusiveMinimum": True,
            "minimum": 0,
            "maximum": MAX_DEADLINE_S,
        },
        metadata={"type": "object", "description": "copied onto the job's events"},
    ),
}


def _json(description: str, schema: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _error(description: str) -> Schema:
    return _json(description, "Error")


UNAUTHORIZED = _error("no or wrong bearer token")
BAD = _error(
    "a parameter or field is wrong (`invalid_request`, the message names it) or the "
    "body is not a JSON object (`payload_invalid`)"
)


def _query(name: str, schema: Schema, description: str = "") -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


PAGING = [
    _query("cursor", STRING, "next_cursor of the previous page"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100}),
]
TIME_QUERY = {"type": "string", "minLength": 1}

PATHS: dict[str, Schema] = {
    "/v1/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "getOpenApi",
            "security": [],
            "responses": {
                "200": {
                    "description": "OpenAPI 3",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            },
        }
    },
    "/v1/events": {
        "get": {
            "summary": "Stored events, newest first",
            "operationId": "listEvents",
            "parameters": [
                _query("source", {"type": "string", "minLength": 1}),
                _query("type", {"type": "string", "minLength": 1}),
                _query("job_id", {"type": "string", "minLength": 1}),
                _query("since", TIME_QUERY, "received at or after: ISO 8601 or unix seconds"),
                _query("until", TIME_QUERY, "received before: ISO 8601 or unix seconds"),
                *PAGING,
            ],
            "responses": {
                "200": _json("a page of events (without `raw`)", "EventList"),
                "400": BAD,
                "401": UNAUTHORIZED,
            },
        }
    },
    "/v1/events/{event_id}": {
        "get": {
            "summary": "One event with `raw`, its deliveries and their attempts",
            "operationId": "getEvent",
            "parameters": [_path("event_id", STRING)],
            "responses": {
                "200": _json("the event", "EventWithDeliveries"),
                "401": UNAUTHORIZED,
                "404": _error("no such event"),
            },
        }
    },
    "/v1/events/{event_id}/replay": {
        "post": {
            "summary": "Send one event again (new deliveries, same event id)",
            "operationId": "replayEvent",
            "parameters": [_path("event_id", STRING)],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": _ref("EventReplayRequest")}},
            },
            "responses": {
                "202": _json("the new deliveries, sent by the sink runners", "EventReplayResult"),
                "400": BAD,
                "401": UNAUTHORIZED,
                "404": _error("no such event"),
            },
        }
    },
    "/v1/replay": {
        "post": {
            "summary": "Replay many events or deliveries, paced by each sink's limits",
            "operationId": "replay",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("ReplayRequest")}},
            },
            "responses": {
                "200": _json("dry run: what it would replay (nothing written)", "ReplayCounts"),
                "202": _json("the deliveries added", "ReplayCounts"),
                "400": BAD,
                "401": UNAUTHORIZED,
            },
        }
    },
    "/v1/deliveries": {
        "get": {
            "summary": "Delivery rows by id",
            "operationId": "listDeliveries",
            "parameters": [
                _query("status", {"type": "string", "enum": list(DELIVERY_STATUSES)}),
                _query("sink", {"type": "string", "minLength": 1}),
                *PAGING,
            ],
            "responses": {
                "200": _json("a page of deliveries", "DeliveryList"),
                "400": BAD,
                "401": UNAUTHORIZED,
            },
        }
    },
    "/v1/deliveries/{delivery_id}/retry": {
        "post": {
            "summary": "Put a delivered or dead delivery back to pending, due now",
            "operationId": "retryDelivery",
            "parameters": [
                _path("delivery_id", {"type": "integer", "format": "int64", "minimum": 1})
            ],
            "responses": {
                "202": _json("the delivery, pending again (attempts kept)", "Delivery"),
                "401": UNAUTHORIZED,
                "404": _error("no such delivery"),
                "409": _error("the delivery is pending already"),
            },
        }
    },
    "/v1/jobs": {
        "post": {
            "summary": "Watch a job: poll it until it ends or its webhook arrives",
            "operationId": "watchJob",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("WatchJobRequest")}},
            },
            "responses": {
                "201": _json("now watching", "Job"),
                "200": _json("already known", "Job"),
                "400": BAD,
                "401": UNAUTHORIZED,
            },
        },
        "get": {
            "summary": "Watched jobs by (source, job_id)",
            "operationId": "listJobs",
            "parameters": [
                _query("source", STRING),
                _query("state", {"type": "string", "enum": list(JOB_STATES)}),
                *PAGING,
            ],
            "responses": {
                "200": _json("a page of jobs", "JobList"),
                "400": BAD,
                "401": UNAUTHORIZED,
            },
        },
    },
    "/v1/jobs/{source}/{job_id}": {
        "delete": {
            "summary": "Stop watching a job",
            "operationId": "unwatchJob",
            "parameters": [_path("source", STRING), _path("job_id", STRING)],
            "responses": {
                "204": {"description": "no longer watched"},
                "401": UNAUTHORIZED,
                "404": _error("no such watched job"),
            },
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "hookyard admin API",
        "version": "1",
        "description": "Events, deliveries, replays and watched jobs. Every route but this "
        "document needs `Authorization: Bearer <server.admin_token>`; without a configured "
        "token the API is off (404). Lists answer `{items, next_cursor}`.",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearerAuth": []}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
    },
}
