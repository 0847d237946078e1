"""Renderful: generation webhooks and status polling (`https://api.renderful.ai/api/v1`).

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

Polling (jobs on models without `supports_webhook`, the safety net, and confirm-by-fetch):
`GET {base}/generations/{id}` with `Authorization: Bearer rf_…` answers the flat shape above,
status `queued | processing | completed | failed`; 404 is `{error, message}`. Never the
deprecated `/predictions/{taskId}/result` alias (it carries `Deprecation`/`Sunset` headers and is
scheduled for removal). No rate limit is published, so none is assumed (`rate_per_min=None`);
the source's `poll_rate_per_s` can add one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from handlers.providers import base
from handlers.providers.base import (
    Poll,
    PollAnswer,
    PollContext,
    Provider,
    StatusRequest,
    WebhookContext,
)
from receiver.core import events
from receiver.core.events import Event

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


# --- Polling ------------------------------------------------------------------------------------

BASE_URL = "https://api.renderful.ai/api/v1"


def build_request(ctx: PollContext) -> StatusRequest:
    """`GET {base}/generations/{id}`; the key goes in the Authorization header and nowhere else."""
    return base.bearer_get(ctx, "/generations/")


def parse_answer(ctx: PollContext, status_code: int, body: bytes) -> PollAnswer:
    """A generation's status answer; junk is `running` (retried until the deadline), not raised."""
    answer = base.read_answer(status_code, body, _error_word)
    if isinstance(answer, PollAnswer):
        return answer
    record = _record(answer)
    status = base.terminal_status(record.get("status"), STATUSES)
    if isinstance(status, PollAnswer):
        return status  # queued, processing, or unknown
    return base.finished(
        ctx,
        status,
        record["status"],
        answer,
        outputs=base.url_list(record.get("outputs"), record.get("output")),
        error=base.as_str(record.get("error")),
        cost=base.as_float(record.get("cost")),
        model=base.as_str(record.get("model")),
    )


def job_id_of(payload: Any) -> str | None:
    """The generation a callback body is about: `data.id` (webhook envelope) or `id` (flat)."""
    return base.as_str(_record(payload).get("id")) if isinstance(payload, dict) else None


def _error_word(answer: Mapping[str, Any] | None) -> str | None:
    """The `error` of Renderful's `{error, message}` error body."""
    found = base.as_str(answer.get("error")) if answer is not None else None
    return found[: base.MAX_WORD] if found else None


POLL = Poll(
    base_url=BASE_URL,
    build_request=build_request,
    parse_answer=parse_answer,
    job_id_of=job_id_of,
    # The recorded generations took 45-80 s. No published limit, so stay polite: first look
    # after 10 s, then back off to at most 30 s between looks.
    first_delay_s=10.0,
    max_interval_s=30.0,
    min_interval_s=0.0,
    rate_per_min=None,  # not published; not guessed
)

PROVIDER = Provider(
    name="renderful",
    signature_preset=SIGNATURE_PRESET,
    parse_webhook=parse_webhook,
    poll=POLL,
    pushes_webhooks=True,
)
