"""What the templates show, as plain functions: safe links, times, statuses, pretty JSON.

Kept apart from the routes so each rule (which URLs may become a link or an image, how a time
reads) is written once and tested without a server or a browser.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

# Text and a symbol for each status, so none is told by colour alone.
STATUS_LABELS = {
    "delivered": ("✓", "delivered"),
    "pending": ("…", "pending"),
    "dead": ("✗", "dead"),
}
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\<>\"'`]")
MAX_URL = 2048


def safe_http_url(value: object) -> str | None:
    """`value` when it is an absolute http(s) URL fit to be an href or an img src, else None.

    Outputs come from provider payloads, so anything else (javascript:, data:, relative or
    protocol-relative URLs, URLs with spaces, quotes or control characters) is shown as text.
    """
    if not isinstance(value, str) or len(value) > MAX_URL or _UNSAFE_URL_CHARS.search(value):
        return None
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return value


def outputs(
    event: Mapping[str, Any], mirrored: Mapping[int, str] | None = None
) -> list[dict[str, Any]]:
    """Each output with the URL it may be linked and shown as (None: text only): its mirrored
    copy where one exists (the provider's URL may have expired), else the provider's URL."""
    found = event.get("outputs")
    items = found if isinstance(found, list) else []
    copies = mirrored or {}
    return [
        {
            "text": str(url),
            "url": safe_http_url(copies.get(i) or url),
            "mirrored": safe_http_url(copies.get(i)) is not None,
        }
        for i, url in enumerate(items)
    ]


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def shown_json(value: Any, limit: int) -> str:
    """pretty_json, cut at `limit` characters with a note saying how much is left out."""
    text = pretty_json(value)
    if len(text) <= limit:
        return text
    left = len(text) - limit
    return f"{text[:limit]}\n… {left:,} more characters (GET /v1/events/{{id}} has all)"


def utc(value: float | None) -> str:
    """Unix seconds as `2026-11-22 10:00:59Z`."""
    if value is None:
        return "—"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def received(value: str | None) -> str:
    """A stored received_at (`2026-11-22T10:00:59.123456Z`) to the second."""
    if not value:
        return "—"
    return value[:19].replace("T", " ") + "Z"


def age(seconds: float) -> str:
    """A duration as people say it: 45 s, 12 min, 3 h, 2 d."""
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def relative(at: float | None, now: float | None = None) -> str:
    """`in 3 min` or `12 s ago`."""
    if at is None:
        return "—"
    delta = at - (time.time() if now is None else now)
    return f"in {age(delta)}" if delta >= 0 else f"{age(delta)} ago"


def glance(statuses: Mapping[str, str] | None) -> list[dict[str, str]]:
    """One entry per sink, worst first (dead, pending, delivered), then by name."""
    order = {"dead": 0, "pending": 1, "delivered": 2}
    items = sorted((statuses or {}).items(), key=lambda kv: (order.get(kv[1], 3), kv[0]))
    return [status_label(status) | {"sink": sink} for sink, status in items]


def status_label(status: str) -> dict[str, str]:
    symbol, text = STATUS_LABELS.get(status, ("?", status))
    return {"status": status, "symbol": symbol, "text": text}


def count(value: int, cap: int) -> str:
    """A capped count: `12`, or `100000+` when the count stopped at the cap."""
    return f"{cap:,}+" if value >= cap else f"{value:,}"


def unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
