"""What every sink provides, and how HTTP answers are classified for retry.

A sink delivers one event (the normalized event JSON, with `raw`) somewhere. It returns the
status code it got (None where there is none), or raises SinkError saying whether a retry can
help. The delivery engine owns retries, timeouts, rate limits and circuit breaking; sinks stay
small and only speak their destination's protocol.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

# Transient by DESIGN.md: 408, 409, 425, 429 and every 5xx. Every other 4xx is permanent.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
ERROR_TEXT_LIMIT = 500


class SinkError(Exception):
    """A failed delivery. `permanent`: retrying cannot help (the delivery goes to dead)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        permanent: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message[:ERROR_TEXT_LIMIT])
        self.message = message[:ERROR_TEXT_LIMIT]
        self.status_code = status_code
        self.permanent = permanent
        self.retry_after_s = retry_after_s


class Sink(Protocol):
    """One configured destination."""

    async def send(self, event: Mapping[str, Any]) -> int | None:
        """Deliver `event`; return the status code, or raise SinkError."""

    async def aclose(self) -> None:
        """Release what the sink holds (files, clients)."""


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What sinks share: one HTTP client (pooled connections) and the sink's timeout."""

    http: httpx.AsyncClient
    timeout_s: float


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date; None if absent or junk."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def check_response(response: httpx.Response, what: str) -> int:
    """The status code of a 2xx answer; otherwise a SinkError classified per DESIGN.md."""
    status = response.status_code
    if 200 <= status < 300:
        return status
    detail = response.text[:200].strip() if response.content else ""
    message = f"{what} answered {status}" + (f": {detail}" if detail else "")
    return _raise(message, status, response.headers.get("retry-after"))


def _raise(message: str, status: int, retry_after: str | None) -> int:
    permanent = 400 <= status < 500 and status not in RETRYABLE_4XX
    raise SinkError(
        message,
        status_code=status,
        permanent=permanent,
        retry_after_s=None if permanent else retry_after_seconds(retry_after),
    )


def transport_error(exc: httpx.HTTPError, what: str) -> SinkError:
    """A network failure (refused, reset, timeout): always worth a retry."""
    return SinkError(f"{what}: {type(exc).__name__}: {exc}"[:ERROR_TEXT_LIMIT])
