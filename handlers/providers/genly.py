"""Genly ReRender: polling only (`https://genly.ai`).

Docs: the "ReRender API" page (kept as shared/providers/004_*.txt; facts it leaves out are in
shared/providers/README.md). Its curl examples use the host `rerender.genly.ai` instead: a
source that needs it sets `base_url`.

No webhooks and no signing: a Genly source has no /hooks URL (`base.polled_only`: no
signature preset, `pushes_webhooks=False`); anything posted to one is stored as
`webhook.unrecognized`.

    POST /api/workflows/{workflow_id}   Authorization: Bearer … → {render_id}
    GET  /api/renders/{render_id}       {_id, workflow_id, inputs[], outputs[], phase,
                                         created_at, updated_at (unix seconds), misc}

`phase` is `pending | processing | completed | failed | dead`; `dead` is a failure too. Image
URLs are `outputs[].cover_src`. No published rate limits; the error body shape is not
documented (404 is read as an unknown render whatever its body says).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from handlers.providers import base
from handlers.providers.base import Poll

BASE_URL = "https://genly.ai"

# Genly's phase words (lower-cased) → ours. Any other word: still running.
PHASES: Mapping[str, str] = MappingProxyType(
    {
        "pending": "queued",
        "processing": "processing",
        "completed": "completed",
        "failed": "failed",
        "dead": "failed",
    }
)


def job_id_of(payload: Any) -> str | None:
    """Genly posts nothing; a relayed answer names `render_id` (create) or `_id` (status)."""
    if not isinstance(payload, dict):
        return None
    return base.as_str(payload.get("render_id")) or base.as_str(payload.get("_id"))


def _fields(answer: Mapping[str, Any], status: str) -> dict[str, Any]:
    """A finished render's images (`outputs[].cover_src`), and its error text unless it
    completed."""
    return {
        "outputs": _cover_sources(answer.get("outputs")),
        "error": None if status == "completed" else _error_text(answer),
    }


def _cover_sources(outputs: Any) -> list[str]:
    """`outputs[].cover_src`, strings only, in order."""
    items = outputs if isinstance(outputs, list) else []
    return base.url_list(*[item.get("cover_src") for item in items if isinstance(item, dict)])


def _error_text(answer: Mapping[str, Any] | None) -> str | None:
    """`error`/`message` at the top or in `misc`: undocumented, so looked for, never required."""
    if answer is None:
        return None
    misc = answer.get("misc")
    places = [answer, misc] if isinstance(misc, dict) else [answer]
    return base.first_text(*[place.get(key) for place in places for key in ("error", "message")])


# `GET {base}/api/renders/{id}`; the key goes in the Authorization header and nowhere else.
build_request = base.keyed_request("/api/renders/")

# A render's `phase`: pending, processing or a word we do not know is running; junk is
# `running` too (retried until the deadline), never raised.
parse_answer = base.word_reader(PHASES, _error_text, _fields, key="phase", missing="phase")

POLL = Poll(
    BASE_URL, build_request, parse_answer, job_id_of,
    # A ReRender run is a diffusion workflow of 1-4 images (tens of seconds) and no limit is
    # published: first look after 10 s, back off to at most 30 s between looks. No rate limit
    # or minimum interval is published, so none is guessed (the defaults: none).
    first_delay_s=10.0, max_interval_s=30.0,
)  # fmt: skip

PROVIDER = base.polled_only("genly", POLL)
