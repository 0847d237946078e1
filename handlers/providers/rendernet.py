"""RenderNet: polling only (`https://api.rendernet.ai`).

Docs: the RenderNet public API reference (one page kept as shared/providers/002_*.txt; the
status API is summarised in shared/providers/README.md).

No webhooks and no signing: a RenderNet source has no /hooks URL (`base.polled_only`: no
signature preset, `pushes_webhooks=False`); anything posted to one is stored as
`webhook.unrecognized`.

Auth: header `X-API-KEY: <key>`. Every response is an envelope `{data, err}` (the reference
page calls the error member `error`; both names are read).

    POST /pub/v1/generations                     a JSON ARRAY of generations →
                                                 data.generation_id, data.media[] (`initiated`)
    GET  /pub/v1/generations/{generation_id}     data.media[]: {id, status, url (on success)}

On success `err` may be null or `{}`.

A generation is a batch: it is finished when EVERY media item is finished, and items can end
differently. Completed (outputs = the successful items' URLs, in order) when at least one item
succeeded, with an error text counting the others; failed when none did. `censored` (reported
by `/status`) counts as failed. An empty media list is still running.

Not-found: a 404, or a 2xx envelope without `data` whose `err` clearly says "not found". Any
other `err` without data is read as running, because its shape is not documented: the
scheduler's deadline ends such a job as `generation.expired` rather than us guessing a failure.
No published rate limits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from handlers.providers import base
from handlers.providers.base import (
    NOT_FOUND,
    RUNNING,
    Poll,
    PollAnswer,
    PollContext,
)
from receiver.core import events

BASE_URL = "https://api.rendernet.ai"

# A media item's status word → ours. An unknown word counts as not finished yet.
MEDIA_STATUSES: Mapping[str, str] = MappingProxyType(
    {
        "initiated": "queued",
        "pending": "processing",
        "success": "completed",
        "failed": "failed",
        "censored": "failed",
    }
)

# Text in `err` that clearly means "this generation does not exist".
NOT_FOUND_MARKERS = ("not found", "not_found", "notfound", "does not exist", "doesn't exist")


# `GET {base}/pub/v1/generations/{id}`; the key goes in `X-API-KEY` and nowhere else.
build_request = base.keyed_request("/pub/v1/generations/", "X-API-KEY", "")


def parse_answer(ctx: PollContext, status_code: int, body: bytes) -> PollAnswer:
    """A generation's envelope; junk is `running` (retried until the deadline), never raised."""
    answer = base.read_answer(status_code, body, _err_text)
    if isinstance(answer, PollAnswer):
        return answer
    data = answer.get("data")
    if not isinstance(data, dict):
        return _without_data(answer)
    media = data.get("media")
    if not isinstance(media, list):
        return PollAnswer(RUNNING, status="unreadable: no media list")
    words = [_media_word(item) for item in media]
    if None in words:
        return PollAnswer(RUNNING, status="unreadable: a media item without a status")
    return _batch(ctx, answer, media, [w for w in words if w is not None])


def job_id_of(payload: Any) -> str | None:
    """RenderNet posts nothing; a relayed create answer names `data.generation_id`."""
    if not isinstance(payload, dict):
        return None
    data = payload.get("data")
    record = data if isinstance(data, dict) else payload
    return base.as_str(record.get("generation_id"))


def _batch(
    ctx: PollContext, answer: Mapping[str, Any], media: Sequence[Any], words: Sequence[str]
) -> PollAnswer:
    """Running until every item is finished; then completed if any succeeded, else failed."""
    ours = [MEDIA_STATUSES.get(word) for word in words]
    summary = _summary(words)
    if not ours or any(status not in events.TERMINAL_STATUSES for status in ours):
        return PollAnswer(RUNNING, status=summary or "no media yet")
    pairs = zip(media, ours, strict=True)
    outputs = base.url_list(*[_media_url(item) for item, status in pairs if status == "completed"])
    succeeded = ours.count("completed")
    return base.finished(
        ctx,
        "completed" if succeeded else "failed",
        summary,  # already cut to MAX_WORD
        answer,
        outputs=outputs,
        error=_failure_text(words) if succeeded < len(ours) else None,
    )


def _without_data(answer: Mapping[str, Any]) -> PollAnswer:
    """An envelope with no `data`: not found only when `err` clearly says so."""
    err = _err_text(answer)
    if err is None:
        return PollAnswer(RUNNING, status="unreadable: no data")
    if any(marker in err.lower() for marker in NOT_FOUND_MARKERS):
        return PollAnswer(NOT_FOUND, status=err)
    return PollAnswer(RUNNING, status=f"err: {err}"[: base.MAX_WORD])


def _media_word(item: Any) -> str | None:
    word = item.get("status") if isinstance(item, dict) else None
    return word.strip().lower() if isinstance(word, str) and word.strip() else None


def _media_url(item: Mapping[str, Any]) -> str | None:
    """`url`; RenderNet's own web app names it `output`, so that is read when `url` is absent."""
    return base.as_str(item.get("url")) or base.as_str(item.get("output"))


def _summary(words: Sequence[str]) -> str:
    """`2 success, 1 censored`: each word with its count, in order of first appearance."""
    return ", ".join(f"{n} {word}" for word, n in Counter(words).items())[: base.MAX_WORD]


def _failure_text(words: Sequence[str]) -> str:
    """`1 of 3 media items did not succeed (1 censored)`."""
    bad = [word for word in words if MEDIA_STATUSES.get(word) == "failed"]
    return f"{len(bad)} of {len(words)} media items did not succeed ({_summary(bad)})"


def _err_text(answer: Mapping[str, Any] | None) -> str | None:
    """`err` (or `error`) as text: a string, or an object's code and message."""
    if answer is None:
        return None
    err = answer.get("err") if answer.get("err") is not None else answer.get("error")
    if isinstance(err, dict):
        parts = [base.as_str(err.get(key)) for key in ("code", "message", "detail")]
        text = ": ".join(part for part in parts if part)
    else:
        text = base.as_str(err) or ""
    return text[: base.MAX_WORD] or None


POLL = Poll(
    BASE_URL, build_request, parse_answer, job_id_of,
    # Image batches take tens of seconds and no limit is published: first look after 10 s,
    # then back off to at most 30 s so a finished batch is seen within half a minute. No rate
    # limit or minimum interval is published, so none is guessed (the defaults: none).
    first_delay_s=10.0, max_interval_s=30.0,
)  # fmt: skip

PROVIDER = base.polled_only("rendernet", POLL)
