"""Rendergrid: signed webhooks and status polling (`https://api.rendergrid.io/api/public/v1`).

Docs: the Rendergrid API guide, pages "Webhooks" and "Job status" (kept as
shared/providers/000_*.txt; facts the guide leaves out are in shared/providers/README.md).

Signing: `hmac` scheme. `X-Webhook-Signature-256: sha256=<hex>` where the hex is
HMAC-SHA256(account secret, `{X-Timestamp}.{raw body}`); `X-Timestamp` is unix seconds at
signing. One secret per account; the freshness window is ours to choose (`tolerance_s`).

One JSON POST when a creation reaches a terminal status:

    X-Webhook-Event        creation.completed | creation.failed
    X-Webhook-Delivery-ID  new on every delivery ATTEMPT (not a dedupe key)
    body                   {event, id, status, result_urls, cost} plus `error` on failure

Polling (the safety net for a webhook that has not come, and confirm-by-fetch):
`GET {base}/creations/{id}` with `Authorization: Bearer rg_live_…`. While running the body is
only `{id, status}`; `result_urls` appear when completed, `error` when failed; an unknown id is
404 `ERR_NOT_FOUND`. Limits (guide, "Job status" and "Rate limits"): one poll per creation per
5 s (faster: 429 `ERR_RATE_LIMIT`), 120 requests/min per key in a fixed 60 s window, and every
429 carries `Retry-After` (the scheduler honours it; it never reaches `parse_answer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from handlers.providers import base
from handlers.providers.base import Poll, Provider, WebhookContext
from receiver.core.events import Event

SIGNATURE_PRESET: Mapping[str, Any] = MappingProxyType(
    {
        "scheme": "hmac",
        "header": "X-Webhook-Signature-256",
        "prefix": "sha256=",
        "encoding": "hex",
        "algorithm": "sha256",
        "template": "{timestamp}.{body}",
        "timestamp_header": "X-Timestamp",
    }
)

# Rendergrid's status words → ours. Any other word makes the body `webhook.unrecognized`.
STATUSES: Mapping[str, str] = MappingProxyType(
    {
        "queued": "queued",
        "processing": "processing",
        "completed": "completed",
        "failed": "failed",
    }
)

EVENT_PREFIX = "creation."  # event names are `creation.<status word>`
EVENT_HEADER = "X-Webhook-Event"


def parse_webhook(ctx: WebhookContext) -> Event:
    """A verified Rendergrid webhook as an event; bodies it cannot read become unrecognized.
    With no `status`, the status word is read from the event name (body, then header)."""
    body = ctx.payload if isinstance(ctx.payload, dict) else {}
    event_name = base.as_str(body.get("event")) or _header(ctx.headers, EVENT_HEADER)
    status = base.webhook_status(body.get("status"), event_name, STATUSES, EVENT_PREFIX)
    # The idempotency key is `{source}:{job_id}:{status}` (events.generation_event): Rendergrid
    # says to dedupe on (creation id, event). X-Webhook-Delivery-ID is deliberately NOT used:
    # it changes on every delivery attempt, so keying on it would store each retry again.
    return base.webhook_event(ctx, base.as_str(body.get("id")), status, **_fields(body))


def _fields(body: Mapping[str, Any], status: str = "") -> dict[str, Any]:
    """A creation's `result_urls`, error and cost, read the same from a webhook and a status
    answer (the status does not matter)."""
    return {
        "outputs": base.url_list(body.get("result_urls")),
        "error": _error_text(body.get("error")),
        "cost": base.as_float(body.get("cost")),
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever its case (the mapping may be a plain dict in tests)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return base.as_str(value)
    return None


def _error_text(value: Any) -> str | None:
    """`error` as text: a string, or the `message` (else `code`) of an error object."""
    if isinstance(value, dict):
        return base.as_str(value.get("message")) or base.as_str(value.get("code"))
    return base.as_str(value)


# --- Polling ------------------------------------------------------------------------------------

BASE_URL = "https://api.rendergrid.io/api/public/v1"
NOT_FOUND_CODE = "ERR_NOT_FOUND"


def job_id_of(payload: Any) -> str | None:
    """The creation a webhook body is about: its `id`."""
    return base.as_str(payload.get("id")) if isinstance(payload, dict) else None


def _error_code(answer: Mapping[str, Any] | None) -> str | None:
    """`ERR_…` from an error body: `error.code`, a bare `error` string, or a top-level `code`."""
    if answer is None:
        return None
    error = answer.get("error")
    code = error.get("code") if isinstance(error, dict) else error
    return base.first_text(code, answer.get("code"))


# `GET {base}/creations/{id}`; the key goes in the Authorization header and nowhere else.
build_request = base.keyed_request("/creations/")

# A creation's status answer (only `{id, status}` while running): queued, processing or an
# unknown word is running; junk is `running` too (retried until the deadline), never raised.
parse_answer = base.word_reader(STATUSES, _error_code, _fields)

POLL = Poll(
    BASE_URL, build_request, parse_answer, job_id_of,
    # Polling is only the safety net here (the webhook usually wins), and the 120/min key budget
    # is shared by every watched creation: start after 10 s and back off to 30 s, so a few
    # dozen jobs in flight stay well inside it.
    first_delay_s=10.0, max_interval_s=30.0,
    min_interval_s=5.0,  # "poll at most once every 5 seconds per creation"; faster is 429
    rate_per_min=120.0,  # per key, fixed 60 s window
)  # fmt: skip

# name, signature preset, webhook reader, polling
PROVIDER = Provider("rendergrid", SIGNATURE_PRESET, parse_webhook, POLL)
