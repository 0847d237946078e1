"""Rendergrid: signed creation webhooks (`https://api.rendergrid.io/api/public/v1`).

Docs: the Rendergrid API guide, pages "Webhooks" and "Job status" (kept as
shared/providers/000_*.txt; facts the guide leaves out are in shared/providers/README.md).

Signing: `hmac` scheme. `X-Webhook-Signature-256: sha256=<hex>` where the hex is
HMAC-SHA256(account secret, `{X-Timestamp}.{raw body}`); `X-Timestamp` is unix seconds at
signing. One secret per account; the freshness window is ours to choose (`tolerance_s`).

One JSON POST when a creation reaches a terminal status:

    X-Webhook-Event        creation.completed | creation.failed
    X-Webhook-Delivery-ID  new on every delivery ATTEMPT (not a dedupe key)
    body                   {event, id, status, result_urls, cost} plus `error` on failure
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from handlers.providers import base
from handlers.providers.base import Provider, WebhookContext
from receiver import events
from receiver.events import Event

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
    """A verified Rendergrid webhook as an event; bodies it cannot read become unrecognized."""
    body = ctx.payload if isinstance(ctx.payload, dict) else {}
    job_id = base.as_str(body.get("id"))
    status = _status(body, ctx.headers)
    if job_id is None or status is None:
        return base.unrecognized(ctx, job_id=job_id)
    # The idempotency key is `{source}:{job_id}:{status}` (events.generation_event): Rendergrid
    # says to dedupe on (creation id, event). X-Webhook-Delivery-ID is deliberately NOT used:
    # it changes on every delivery attempt, so keying on it would store each retry again.
    return events.generation_event(
        source=ctx.source,
        provider=ctx.provider,
        job_id=job_id,
        status=status,
        via="webhook",
        raw=ctx.payload,
        outputs=base.url_list(body.get("result_urls")),
        error=_error_text(body.get("error")),
        cost=base.as_float(body.get("cost")),
    )


def _status(body: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    """The body's `status` when it has one, else the word in the event name (body, then header)."""
    word = body.get("status")
    if isinstance(word, str):
        return STATUSES.get(word.strip().lower())
    name = base.as_str(body.get("event")) or _header(headers, EVENT_HEADER)
    return _status_of_event(name)


def _status_of_event(name: str | None) -> str | None:
    if name is None or not name.startswith(EVENT_PREFIX):
        return None
    return STATUSES.get(name.removeprefix(EVENT_PREFIX).strip().lower())


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


PROVIDER = Provider(
    name="rendergrid", signature_preset=SIGNATURE_PRESET, parse_webhook=parse_webhook
)
