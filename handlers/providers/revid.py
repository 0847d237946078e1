"""RevidAPI: polling only (`https://ai.revidapi.com`).

Docs: "AI Image Generate API" (kept as shared/providers/003_*.txt; facts it leaves out are in
shared/providers/README.md).

No webhooks and no signing: a RevidAPI source has no /hooks URL (`signature_preset=None`,
`pushes_webhooks=False`); anything posted to one is stored as `webhook.unrecognized`.

    POST /v1/image/generate   multipart form → {job_id}; jobs typically take 45-60 s
    GET  /v1/jobs/{job_id}    Authorization: Bearer sk_live_… →
                              {"status": "processing", "result": null}
                              {"status": "completed", "result": "https://…/image.png"}

The failure word is NOT documented: `failed` and `error` (any case) are read as failure, and any
other word as still running, so a job stuck on a word we do not know ends at the scheduler's
deadline as `generation.expired` instead of a guessed outcome.

Limits: 1000 requests/min (429). 503 means the model provider is overloaded: the scheduler
retries it like any 5xx. 404 is an unknown job.
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

BASE_URL = "https://ai.revidapi.com"

# RevidAPI's status words (lower-cased) → ours. Any other word: still running.
STATUSES: Mapping[str, str] = MappingProxyType(
    {
        "processing": "processing",
        "completed": "completed",
        "failed": "failed",  # undocumented: the README's reading of the likely words
        "error": "failed",
    }
)


def parse_webhook(ctx: WebhookContext) -> events.Event:
    """RevidAPI sends no webhooks: whatever arrives is kept as `webhook.unrecognized`."""
    return base.unrecognized(ctx)


def build_request(ctx: PollContext) -> StatusRequest:
    """`GET {base}/v1/jobs/{job_id}`; the key goes in the Authorization header and nowhere else."""
    return base.bearer_get(ctx, "/v1/jobs/")


def parse_answer(ctx: PollContext, status_code: int, body: bytes) -> PollAnswer:
    """A job's `{status, result}`; junk is `running` (retried until the deadline), never raised."""
    answer = base.read_answer(status_code, body, _error_text)
    if isinstance(answer, PollAnswer):
        return answer
    status = base.terminal_status(answer.get("status"), STATUSES)
    if isinstance(status, PollAnswer):
        return status  # processing, or a word we do not know (the deadline ends it)
    completed = status == "completed"
    return base.finished(
        ctx,
        status,
        answer["status"],
        answer,
        outputs=base.url_list(answer.get("result")) if completed else (),
        error=None if completed else _error_text(answer),
    )


def job_id_of(payload: Any) -> str | None:
    """RevidAPI posts nothing; a relayed create answer names `job_id`."""
    return base.as_str(payload.get("job_id")) if isinstance(payload, dict) else None


def _error_text(answer: Mapping[str, Any] | None) -> str | None:
    """The first text among `error`, `message` and (for a failed job) `result`; objects give
    their `message` or `code`. The failure and error shapes are undocumented, so all are tried."""
    if answer is None:
        return None
    for key in ("error", "message", "result"):
        value = answer.get(key)
        if isinstance(value, dict):
            value = value.get("message") or value.get("code")
        text = base.as_str(value)
        if text is not None:
            return text[: base.MAX_WORD]
    return None


POLL = Poll(
    base_url=BASE_URL,
    build_request=build_request,
    parse_answer=parse_answer,
    job_id_of=job_id_of,
    # Jobs typically take 45-60 s: a first look at 30 s is rarely wasted, and capping the
    # back-off at 15 s sees the result within 15 s of it landing. 1000/min leaves room for that.
    first_delay_s=30.0,
    max_interval_s=15.0,
    min_interval_s=0.0,
    rate_per_min=1000.0,  # per key (429 above it)
)

PROVIDER = Provider(
    name="revid",
    signature_preset=None,
    parse_webhook=parse_webhook,
    poll=POLL,
    pushes_webhooks=False,
)
