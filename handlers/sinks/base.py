"""What every sink provides, and how HTTP answers are classified for retry.

A sink delivers one event (the normalized event JSON, with `raw`) somewhere. It returns the
status code it got (None where there is none), or raises SinkError saying whether a retry can
help. The delivery engine owns retries, timeouts, rate limits and circuit breaking; sinks stay
small and only speak their destination's protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from receiver.core.http import (
    EXCERPT_BYTES,
    Answer,
    header,
    is_permanent,
    request_capped,
    retry_after_s,
)
from receiver.core.outputs import Sent
from receiver.core.poster import Poster, PostFailed

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
    """One configured destination.

    A sink whose work grows with the event (S3 mirroring every output) may also define
    `budget_s(event) -> float`: the whole time one send of that event may take. The delivery
    engine uses it instead of `timeout_s` when present (see `send_budget_s`)."""

    async def send(self, event: Mapping[str, Any]) -> int | Sent | None:
        """Deliver `event`; return the status code (or a `Sent` saying what the send stored,
        e.g. mirrored outputs), or raise SinkError."""

    async def aclose(self) -> None:
        """Release what the sink holds (files, clients)."""


class Budgeted(Protocol):
    """A sink that says how long one send of an event may take."""

    def budget_s(self, event: Mapping[str, Any]) -> float:
        """Seconds the whole send of `event` may take (the engine's overall deadline)."""


def send_budget_s(sink: Sink | Budgeted, event: Mapping[str, Any], timeout_s: float) -> float:
    """The overall deadline of one send: the sink's own budget for `event` if it has one (it
    is never below `timeout_s`), else `timeout_s`."""
    budget = getattr(sink, "budget_s", None)
    return max(timeout_s, float(budget(event))) if callable(budget) else timeout_s


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What sinks share: HTTP clients (pooled connections) and the sink's timeout, the overall
    deadline of one send (every read in it included).

    `post` is the delivery hot path: on the Poster (pyreqwest) the engine gives each sink
    (receiver.core.poster), within the deadline the engine puts around every send (a sink's
    `send` only ever runs under it: receiver.delivery), so it sets no timer of its own;
    without a Poster (unit tests with httpx mock transports) over `http`, within timeout_s.
    `http` (httpx) serves everything else, such as the S3 sink's output fetches."""

    http: httpx.AsyncClient
    timeout_s: float
    poster: Poster | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST `body`; the answer capped at EXCERPT_BYTES, the whole exchange within
        the send's deadline. Raises PostFailed (no answer) or TimeoutError."""
        if self.poster is not None:
            return await self.poster.post(url, body, headers, limit=EXCERPT_BYTES, deadline_s=None)
        try:
            return await request_capped(
                self.http, "POST", url, limit=EXCERPT_BYTES, deadline_s=self.timeout_s,
                content=body, headers=headers, timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise PostFailed(f"{type(exc).__name__}: {exc}") from None


def check_answer(answer: Answer, what: str) -> int:
    """The status code of a 2xx answer; otherwise a SinkError classified per DESIGN.md, with
    the start of the (already capped) body as its detail."""
    if 200 <= answer.status < 300:
        return answer.status
    detail = answer.excerpt()
    message = f"{what} answered {answer.status}" + (f": {detail}" if detail else "")
    raise status_error(message, answer.status, header(answer.headers, "retry-after"))


def status_error(
    message: str, status: int, retry_after: str | None, *, permanent: bool = False
) -> SinkError:
    """A non-2xx answer as a SinkError: permanent if told so or by DESIGN.md's status rules;
    a transient one carries the peer's Retry-After."""
    permanent = permanent or is_permanent(status)
    return SinkError(
        message,
        status_code=status,
        permanent=permanent,
        retry_after_s=None if permanent else retry_after_s(retry_after),
    )


def transport_error(exc: httpx.HTTPError | PostFailed, what: str) -> SinkError:
    """A network failure (refused, reset, timeout): always worth a retry."""
    detail = str(exc) if isinstance(exc, PostFailed) else f"{type(exc).__name__}: {exc}"
    return SinkError(f"{what}: {detail}"[:ERROR_TEXT_LIMIT])


def deadline_error(what: str, timeout_s: float) -> SinkError:
    """A send that did not finish within its overall deadline: worth a retry."""
    return SinkError(f"{what}: TimeoutError: no complete answer within timeout_s = {timeout_s:g}")
