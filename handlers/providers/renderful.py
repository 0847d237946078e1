"""Renderful: generation webhooks (`https://api.renderful.ai/api/v1`).

Docs: the Renderful OpenAPI 3.0 document (kept as shared/providers/001_*.txt) and the public
webhook notes summarised in shared/providers/README.md.

Signing: an HMAC, but set per account. `POST /agents/register` / `PATCH /agents/webhook`
answer with `webhook_secret`, `signature_header` and `signature_algorithm`, so the preset below
has NO header and its algorithm is only a default: a Renderful source must configure
`signature.header` (and `algorithm` if it differs) from that response. What exactly is signed
is not published; `{body}` is a guess to confirm per account, and a source can instead run in
confirm-by-fetch mode (the event then comes from `GET /generations/{id}`).

Two body shapes are read:

    webhook   {"event": "generation.completed",
               "data": {id, status, model, outputs, created_at, completed_at}}
    flat      GET /generations/{id}: {id, status, model, output, outputs, error, cost, ...}

Results are in `outputs` (array) and/or `output` (one URL): both are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from handlers.providers import base
from handlers.providers.base import Provider, WebhookContext
from receiver import events
from receiver.events import Event

# No "header": it is per account (see the docstring), so the source must name it.
SIGNATURE_PRESET: Mapping[str, Any] = MappingProxyType(
    {"scheme": "hmac", "encoding": "hex", "algorithm": "sha256", "template": "{body}"}
)

# Renderful's status words → ours; the documented four plus spellings we tolerate.
# Any other word makes the body `webhook.unrecognized`.
STATUSES: Mapping[str, str] = MappingProxyType(
    {
        "queued": "queued",
        "processing": "processing",
        "completed": "completed",
        "succeeded": "completed",
        "success": "completed",
        "failed": "failed",
        "error": "failed",
        "canceled": "failed",
        "cancelled": "failed",
    }
)

EVENT_PREFIX = "generation."  # event names are `generation.<status word>`


def parse_webhook(ctx: WebhookContext) -> Event:
    """A verified Renderful body as an event; bodies it cannot read become unrecognized."""
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    record = _record(payload)
    job_id = base.as_str(record.get("id"))
    status = _status(record, base.as_str(payload.get("event")))
    if job_id is None or status is None:
        return base.unrecognized(ctx, job_id=job_id)
    return events.generation_event(
        source=ctx.source,
        provider=ctx.provider,
        job_id=job_id,
        status=status,
        via="webhook",
        raw=ctx.payload,
        outputs=base.url_list(record.get("outputs"), record.get("output")),
        error=base.as_str(record.get("error")),
        cost=base.as_float(record.get("cost")),
        model=base.as_str(record.get("model")),
    )


def _record(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The generation itself: the webhook envelope's `data`, or the flat body."""
    data = payload.get("data")
    return data if isinstance(data, dict) else payload


def _status(record: Mapping[str, Any], event_name: str | None) -> str | None:
    """The record's `status` when it has one, else the word in `generation.<status>`."""
    word = record.get("status")
    if isinstance(word, str):
        return STATUSES.get(word.strip().lower())
    if event_name is None or not event_name.startswith(EVENT_PREFIX):
        return None
    return STATUSES.get(event_name.removeprefix(EVENT_PREFIX).strip().lower())


PROVIDER = Provider(
    name="renderful", signature_preset=SIGNATURE_PRESET, parse_webhook=parse_webhook
)
