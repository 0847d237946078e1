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
from handlers.providers.base import Poll, Provider, WebhookContext
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
    word, event_name = record.get("status"), base.as_str(payload.get("event"))
    status = base.webhook_status(word, event_name, STATUSES, EVENT_PREFIX)
    return base.webhook_event(ctx, base.as_str(record.get("id")), status, **_fields(record))


def _record(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The generation itself: the webhook envelope's `data`, or the flat body."""
    data = payload.get("data")
    return data if isinstance(data, dict) else payload


def _fields(record: Mapping[str, Any], status: str = "") -> dict[str, Any]:
    """A generation's results (`outputs` and/or `output`), error, cost and model, read the same
    from a webhook and a status answer (the status does not matter)."""
    return {
        "outputs": base.url_list(record.get("outputs"), record.get("output")),
        "error": base.as_str(record.get("error")),
        "cost": base.as_float(record.get("cost")),
        "model": base.as_str(record.get("model")),
    }


# --- Polling ------------------------------------------------------------------------------------

BASE_URL = "https://api.renderful.ai/api/v1"


def job_id_of(payload: Any) -> str | None:
    """The generation a callback body is about: `data.id` (webhook envelope) or `id` (flat)."""
    return base.as_str(_record(payload).get("id")) if isinstance(payload, dict) else None


def _error_word(answer: Mapping[str, Any] | None) -> str | None:
    """The `error` of Renderful's `{error, message}` error body."""
    return base.first_text(answer.get("error")) if answer is not None else None


# `GET {base}/generations/{id}`; the key goes in the Authorization header and nowhere else.
build_request = base.keyed_request("/generations/")

# A generation's status answer (flat, or the webhook envelope's `data`): queued, processing
# or an unknown word is running; junk is `running` too (retried until the deadline), not raised.
parse_answer = base.word_reader(STATUSES, _error_word, _fields, record=_record)

POLL = Poll(
    BASE_URL, build_request, parse_answer, job_id_of,
    # The recorded generations took 45-80 s. No published limit, so stay polite: first look
    # after 10 s, then back off to at most 30 s between looks. No rate limit is published, so
    # none is guessed (the defaults: none).
    first_delay_s=10.0, max_interval_s=30.0,
)  # fmt: skip

# name, signature preset, webhook reader, polling
PROVIDER = Provider("renderful", SIGNATURE_PRESET, parse_webhook, POLL)
