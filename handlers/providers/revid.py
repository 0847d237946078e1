"""RevidAPI: polling only (`https://ai.revidapi.com`).

Docs: "AI Image Generate API" (kept as shared/providers/003_*.txt; facts it leaves out are in
shared/providers/README.md).

No webhooks and no signing: a RevidAPI source has no /hooks URL (`base.polled_only`: no
signature preset, `pushes_webhooks=False`); anything posted to one is stored as
`webhook.unrecognized`.

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
from handlers.providers.base import Poll

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


def job_id_of(payload: Any) -> str | None:
    """RevidAPI posts nothing; a relayed create answer names `job_id`."""
    return base.as_str(payload.get("job_id")) if isinstance(payload, dict) else None


def _fields(answer: Mapping[str, Any], status: str) -> dict[str, Any]:
    """A completed job's `result` URL; a failed one's error text."""
    if status == "completed":
        return {"outputs": base.url_list(answer.get("result")), "error": None}
    return {"outputs": (), "error": _error_text(answer)}


def _error_text(answer: Mapping[str, Any] | None) -> str | None:
    """The first text among `error`, `message` and (for a failed job) `result`; objects give
    their `message` or `code`. The failure and error shapes are undocumented, so all are tried."""
    if answer is None:
        return None
    values = [answer.get(key) for key in ("error", "message", "result")]
    return base.first_text(
        *[v.get("message") or v.get("code") if isinstance(v, dict) else v for v in values]
    )


# `GET {base}/v1/jobs/{job_id}`; the key goes in the Authorization header and nowhere else.
build_request = base.keyed_request("/v1/jobs/")

# A job's `{status, result}`: processing, or a word we do not know, is running (the deadline
# ends it); junk is `running` too (retried until the deadline), never raised.
parse_answer = base.word_reader(STATUSES, _error_text, _fields)

POLL = Poll(
    BASE_URL, build_request, parse_answer, job_id_of,
    # Jobs typically take 45-60 s: a first look at 30 s is rarely wasted, and capping the
    # back-off at 15 s sees the result within 15 s of it landing. 1000/min leaves room for that.
    first_delay_s=30.0, max_interval_s=15.0,
    rate_per_min=1000.0,  # per key (429 above it)
)  # fmt: skip

PROVIDER = base.polled_only("revid", POLL)
