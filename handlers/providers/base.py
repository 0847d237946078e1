"""What every provider module provides, and the helpers they share."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from receiver.core import events, jsonx
from receiver.core.events import Event


@dataclass(frozen=True, slots=True)
class WebhookContext:
    """A verified webhook, as a provider module sees it (sans-I/O: no request, no store)."""

    source: str
    provider: str
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    payload: Any  # the body parsed as JSON
    message_id: str | None = None  # the signature scheme's message id, when it has one


@dataclass(frozen=True, slots=True)
class PollContext:
    """One job to ask about (sans-I/O: the scheduler does the HTTP)."""

    source: str
    provider: str
    job_id: str
    base_url: str  # the source's base_url, else the provider's documented one; no trailing /
    api_key: str | None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StatusRequest:
    method: str
    url: str
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class PollAnswer:
    """What a status answer says: still `running`, `done` (with its terminal event), or
    `not_found` (the provider does not know the job)."""

    state: str  # "running" | "done" | "not_found"
    event: Event | None = None  # for "done": a terminal generation event with via="poll"
    status: str | None = None  # the provider's own status word, for logs and the job row


RUNNING, DONE, NOT_FOUND = "running", "done", "not_found"


@dataclass(frozen=True, slots=True)
class Poll:
    """How to ask a provider for a job's status, and the limits it documents."""

    base_url: str  # the documented API root
    build_request: Callable[[PollContext], StatusRequest]
    # Called for 2xx answers and 404 only; the scheduler handles 429/5xx/network itself.
    parse_answer: Callable[[PollContext, int, bytes], PollAnswer]
    # The job a callback body is about, for confirm-by-fetch (None: cannot tell).
    job_id_of: Callable[[Any], str | None]
    first_delay_s: float = 5.0  # wait this long before the first poll of a new job
    max_interval_s: float = 60.0  # back off while the job runs, up to this
    min_interval_s: float = 0.0  # never poll one job more often (Rendergrid: 5 s)
    rate_per_min: float | None = None  # per API key (Rendergrid 120, RevidAPI 1000)


@dataclass(frozen=True, slots=True)
class Provider:
    """One provider: its verification preset, how to read its webhooks, how to poll it."""

    name: str
    # The `signature` table a source of this provider gets when it configures none;
    # keys it configures override the preset's. None: the source must configure a scheme.
    signature_preset: Mapping[str, Any] | None
    parse_webhook: Callable[[WebhookContext], Event]
    poll: Poll | None = None  # None: the provider has no status API we know
    pushes_webhooks: bool = True  # False: polling is the only way to learn the outcome


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def unrecognized(ctx: WebhookContext, job_id: str | None = None) -> Event:
    """A verified body we cannot read: stored as `webhook.unrecognized`, never dropped."""
    key = ctx.message_id or f"sha256:{body_digest(ctx.body)}"
    return events.other_event(
        type_=events.UNRECOGNIZED,
        source=ctx.source,
        provider=ctx.provider,
        idempotency_key=f"{ctx.source}:unrecognized:{key}",
        raw=ctx.payload,
        job_id=job_id,
    )


def webhook_event(
    ctx: WebhookContext, job_id: str | None, status: str | None, **fields: Any
) -> Event:
    """The generation event a verified webhook reports (via="webhook"), or, when it names no
    job or no status word we know, `webhook.unrecognized` (with the job id if it named one)."""
    if job_id is None or status is None:
        return unrecognized(ctx, job_id=job_id)
    return events.generation_event(
        source=ctx.source,
        provider=ctx.provider,
        job_id=job_id,
        status=status,
        via="webhook",
        raw=ctx.payload,
        **fields,
    )


def webhook_status(
    word: Any, event_name: str | None, table: Mapping[str, str], prefix: str
) -> str | None:
    """Our status for a webhook body: its status `word` when it has one, else the word in the
    event name `{prefix}{word}`; None for an unknown word or no word at all."""
    if isinstance(word, str):
        return table.get(word.strip().lower())
    if event_name is None or not event_name.startswith(prefix):
        return None
    return table.get(event_name.removeprefix(prefix).strip().lower())


def as_str(value: Any) -> str | None:
    """A non-empty string, or None for anything else."""
    return value if isinstance(value, str) and value else None


def as_float(value: Any) -> float | None:
    """A finite number as a float, or None (a bool, a string, NaN, or an int beyond a double)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def url_list(*values: Any) -> list[str]:
    """Collect URL strings from single values and lists, in order, without repeats."""
    found: list[str] = []
    for value in values:
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, str) and item and item not in found:
                found.append(item)
    return found


def json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None for anything else (not strict JSON, a list…), read
    by the one parser of outside JSON: a number too large for a double reads as null, and
    NaN, Infinity or a lone surrogate escape make the answer unreadable, never an event."""
    try:
        value = jsonx.loads(body, numbers=jsonx.NULL)
    except jsonx.JSONError:
        return None
    return value if isinstance(value, dict) else None


def keyed_request(
    path: str, key_header: str = "Authorization", key_prefix: str = "Bearer "
) -> Callable[[PollContext], StatusRequest]:
    """A provider's `build_request`: `GET {base_url}{path}{job id}` with the key (after
    `key_prefix`) in `key_header` and nowhere else; by default `Authorization: Bearer {key}`.
    The job id is one quoted path segment, whatever it contains."""

    def build_request(ctx: PollContext) -> StatusRequest:
        url = f"{ctx.base_url.rstrip('/')}{path}{quote(ctx.job_id, safe='')}"
        headers = {"Accept": "application/json"}
        if ctx.api_key:
            headers[key_header] = f"{key_prefix}{ctx.api_key}"
        return StatusRequest(method="GET", url=url, headers=headers)

    return build_request


MAX_WORD = 100  # the longest provider text kept as a PollAnswer status (it lands in the job row)


def read_answer(
    status_code: int, body: bytes, not_found_text: Callable[[dict[str, Any] | None], str | None]
) -> dict[str, Any] | PollAnswer:
    """The JSON object of a 2xx status answer, or the PollAnswer that settles it: a 404 is
    `not_found` (with the provider's own error text), anything else unreadable is `running`
    (the scheduler retries until the deadline). Never raises."""
    answer = json_object(body)
    if status_code == 404:
        return PollAnswer(NOT_FOUND, status=not_found_text(answer) or "http 404")
    if not 200 <= status_code < 300:
        return PollAnswer(RUNNING, status=f"unreadable: http {status_code}")
    if answer is None:
        return PollAnswer(RUNNING, status="unreadable: not a JSON object")
    return answer


def terminal_status(
    word: Any, table: Mapping[str, str], field: str = "status word"
) -> str | PollAnswer:
    """Our terminal status for the provider's word, or a `running` answer (a running word,
    an unknown one, or no word at all)."""
    if not isinstance(word, str):
        return PollAnswer(RUNNING, status=f"unreadable: no {field}")
    status = table.get(word.strip().lower())
    if status not in events.TERMINAL_STATUSES:
        return PollAnswer(RUNNING, status=word[:MAX_WORD])
    return status


def finished(ctx: PollContext, status: str, word: str, answer: Any, **fields: Any) -> PollAnswer:
    """The `done` answer: a terminal event with via="poll", keyed on the WATCHED job id, so its
    idempotency key is the one the provider's webhook for the same outcome gets."""
    event = events.generation_event(
        source=ctx.source,
        provider=ctx.provider,
        job_id=ctx.job_id,
        status=status,
        via="poll",
        raw=answer,
        metadata=ctx.metadata,
        **fields,
    )
    return PollAnswer(DONE, event=event, status=word[:MAX_WORD])


def _whole(answer: dict[str, Any]) -> Mapping[str, Any]:
    return answer


def first_text(*values: Any) -> str | None:
    """The first non-empty string among `values`, cut to MAX_WORD; None when there is none."""
    for value in values:
        text = as_str(value)
        if text is not None:
            return text[:MAX_WORD]
    return None


def word_reader(
    statuses: Mapping[str, str],
    not_found_text: Callable[[dict[str, Any] | None], str | None],
    fields: Callable[[Mapping[str, Any], str], Mapping[str, Any]],
    *,
    key: str = "status",
    missing: str = "status word",
    record: Callable[[dict[str, Any]], Mapping[str, Any]] = _whole,
) -> Callable[[PollContext, int, bytes], PollAnswer]:
    """A provider's `parse_answer` for status answers whose record (`record(answer)`, else the
    whole answer) carries one status word under `key`, read through its `statuses` table: a 404
    or junk as `read_answer` says; a running or unknown word, or none ("unreadable: no
    {missing}"), `running` (the scheduler's deadline ends a job stuck on it); a terminal word
    `done`, with the event fields `fields(record, our status)` gives. Never raises."""

    def parse_answer(ctx: PollContext, status_code: int, body: bytes) -> PollAnswer:
        answer = read_answer(status_code, body, not_found_text)
        if isinstance(answer, PollAnswer):
            return answer
        found = record(answer)
        status = terminal_status(found.get(key), statuses, missing)
        if isinstance(status, PollAnswer):
            return status
        return finished(ctx, status, found[key], answer, **fields(found, status))

    return parse_answer


def polled_only(name: str, poll: Poll) -> Provider:
    """A provider that sends no webhooks and signs nothing: its sources have no /hooks URL
    (no signature preset), polling is the only way to learn an outcome, and anything posted
    to one is kept as `webhook.unrecognized`."""
    return Provider(
        name=name,
        signature_preset=None,
        parse_webhook=unrecognized,
        poll=poll,
        pushes_webhooks=False,
    )
