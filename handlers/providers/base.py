"""What every provider module provides, and the helpers they share."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from receiver import events
from receiver.events import Event


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
class Provider:
    """One provider: its verification preset and how to read its webhooks."""

    name: str
    # The `signature` table a source of this provider gets when it configures none;
    # keys it configures override the preset's. None: the source must configure a scheme.
    signature_preset: Mapping[str, Any] | None
    parse_webhook: Callable[[WebhookContext], Event]


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


def as_str(value: Any) -> str | None:
    """A non-empty string, or None for anything else."""
    return value if isinstance(value, str) and value else None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def url_list(*values: Any) -> list[str]:
    """Collect URL strings from single values and lists, in order, without repeats."""
    found: list[str] = []
    for value in values:
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, str) and item and item not in found:
                found.append(item)
    return found
