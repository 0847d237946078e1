"""Generic: any signed JSON webhook, stored as `webhook.received` without interpretation.

Serves providers without a module of their own: Replicate and OpenAI (Standard Webhooks),
fal.ai (Ed25519 over request id, user id, timestamp and the body's SHA-256) and users' own
services. Docs:

    Standard Webhooks  https://www.standardwebhooks.com
    Replicate          https://replicate.com/docs/topics/webhooks/receive-webhook
    OpenAI             https://developers.openai.com/api/docs/api-reference/webhook-events
    fal                https://docs.fal.ai/model-endpoints/webhooks

Signing: no preset. The source must configure `signature.scheme` (`standard-webhooks` for
Replicate and OpenAI, `fal` for fal.ai, `stripe` or `hmac` for others); see DESIGN.md.

Idempotency: the scheme's message id when it has one (Standard Webhooks `webhook-id`, stable
across redeliveries; fal's request id), else the SHA-256 of the raw body.
"""

from __future__ import annotations

from typing import Any

from handlers.providers import base
from handlers.providers.base import Provider, WebhookContext
from receiver.core import events
from receiver.core.events import Event

# Where a job id is looked for, in order: Replicate `id`, fal `request_id`, a user's `job_id`,
# and an envelope's `data.id`. The first non-empty string wins.
JOB_ID_KEYS = ("id", "request_id", "job_id")


def parse_webhook(ctx: WebhookContext) -> Event:
    """Every verified body, whatever its shape, as one `webhook.received` event."""
    return events.other_event(
        type_=events.RECEIVED,
        source=ctx.source,
        provider=ctx.provider,
        idempotency_key=idempotency_key(ctx),
        raw=ctx.payload,
        job_id=job_id(ctx.payload),
    )


def idempotency_key(ctx: WebhookContext) -> str:
    """`{source}:{message id}`, else `{source}:sha256:{hex of the raw body}`."""
    if ctx.message_id:
        return f"{ctx.source}:{ctx.message_id}"
    return f"{ctx.source}:sha256:{base.body_digest(ctx.body)}"


def job_id(payload: Any) -> str | None:
    """The first string among `id`, `request_id`, `job_id`, `data.id` (objects only)."""
    if not isinstance(payload, dict):
        return None
    for key in JOB_ID_KEYS:
        found = base.as_str(payload.get(key))
        if found is not None:
            return found
    data = payload.get("data")
    return base.as_str(data.get("id")) if isinstance(data, dict) else None


PROVIDER = Provider(name="generic", signature_preset=None, parse_webhook=parse_webhook)
