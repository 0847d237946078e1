"""The delivery hot path's HTTP client: one POST, capped and deadline-bound, on pyreqwest.

Delivery sends every event to every sink, and in `serve` it shares the event loop with the
webhook endpoint, so what a POST costs that loop's thread is what limits both. pyreqwest (Rust's
reqwest and hyper, on its own tokio thread) does the connection, the writing and the parsing
off the loop. Measured in bench/client (CPU per POST of a small event, the loop's thread / the
whole process, on a slow hour of a 2-core VM): aiohttp 170-230 / the same, pyreqwest 30-40 /
70-100 µs; in a draining worker (bench/delivery/drain.py) the client change alone took the
loop's thread from ~600 to ~360 µs per delivery. Everything else that talks HTTP (polls, S3
output fetches with their SSRF guard, JWKS) keeps httpx, where the rate is low.

One Poster per sink: its own client and connection pool, sized to the sink's concurrency, so a
slow sink's connections never queue another sink's sends. No redirects, no proxies from the
environment, no cookies, no decompression (the excerpt kept is of the bytes sent).

Idle pooled connections are dropped after KEEPALIVE_S, before the common server idle timeouts
(uvicorn and Node 5 s, nginx 75 s) close them under us. A POST that fails before any answer
arrived (the server closed a kept-alive connection as we wrote: "connection closed before
message completed"; or the connection could not be made) is sent once more within the same
deadline: in the keep-alive race the sink most likely never saw it, and a failed attempt would
cost the event one of its `max_attempts` and count toward pausing the sink. Delivery is
at-least-once anyway (receivers deduplicate by event id), so the rare resend of a request that
did arrive is safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta

from pyreqwest import exceptions as rq
from pyreqwest.client import Client, ClientBuilder

from receiver.core.http import Answer, declared_length

KEEPALIVE_S = 3.0


class PostFailed(Exception):
    """The POST did not get an answer: connection refused or reset, DNS, a broken answer.
    (A timeout is TimeoutError, as everywhere.)"""


class _Unanswered(Exception):
    """The exchange failed before the answer's head arrived: worth one more send."""

    def __init__(self, error: rq.NetworkError) -> None:
        super().__init__(error)
        self.error = error


def _describe(exc: rq.PyreqwestError) -> str:
    """`ConnectError: connection error / client error (SendRequest) / connection closed before
    message completed`: the error and its chain of causes, innermost last. reqwest's "error
    sending request for url (…)" is left out: the caller names the URL, masked."""
    details = getattr(exc, "details", None) or {}
    causes = [str(c.get("message", "")) for c in details.get("causes") or ()]
    message = str(exc.args[0]) if exc.args else ""
    kept = [c for c in causes if " for url (" not in c]
    return " / ".join([f"{type(exc).__name__}: {message}", *kept])[:1000]


class Poster:
    """POSTs bodies and reads at most `limit` bytes of each answer, all within a deadline."""

    def __init__(self, max_connections: int, user_agent: str = "hookyard") -> None:
        self.max_connections = max_connections
        self.user_agent = user_agent
        self._client: Client | None = None

    def _open(self) -> Client:
        if self._client is None:  # on first use
            self._client = (
                ClientBuilder()
                .max_connections(self.max_connections)
                .pool_max_idle_per_host(self.max_connections)
                .pool_idle_timeout(timedelta(seconds=KEEPALIVE_S))
                .follow_redirects(False)
                .no_proxy()
                .default_cookie_store(False)
                .gzip(False)
                .brotli(False)
                .zstd(False)
                .deflate(False)
                .error_for_status(False)
                .user_agent(self.user_agent)
                .build()
            )
        return self._client

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        limit: int,
        deadline_s: float | None,
    ) -> Answer:
        """POST `body`; the whole exchange ends within `deadline_s` (TimeoutError otherwise)
        and at most `limit` bytes of the answer are read (`truncated` says there was more).
        `deadline_s=None`: the caller's own deadline bounds the exchange (delivery runs every
        send under one; a second timer per POST cost the loop ~5 % of a delivery)."""
        try:
            if deadline_s is None:
                return await self._answered(url, body, headers, limit)
            async with asyncio.timeout(deadline_s):
                return await self._answered(url, body, headers, limit)
        except rq.RequestTimeoutError:  # none is set on the client; the deadline is ours
            raise TimeoutError from None
        except rq.PyreqwestError as exc:
            raise PostFailed(_describe(exc)) from None

    async def _answered(
        self, url: str, body: bytes, headers: Mapping[str, str], limit: int
    ) -> Answer:
        """The exchange, sent once more if it failed before any answer arrived."""
        try:
            return await self._exchange(url, body, headers, limit)
        except _Unanswered:
            pass
        try:
            return await self._exchange(url, body, headers, limit)
        except _Unanswered as exc:
            raise PostFailed(_describe(exc.error)) from None

    async def _exchange(
        self, url: str, body: bytes, headers: Mapping[str, str], limit: int
    ) -> Answer:
        answered = False
        try:
            async with self._open().post(url).headers(headers).body_bytes(
                body
            ).build_streamed() as response:
                answered = True
                reader = response.body_reader
                declared = declared_length(response.headers)
                data = b""
                # Until the cap, the end, or the declared length is in: one read fewer (a
                # round trip to the client's thread) for the usual short answer, none for 0.
                while len(data) <= limit and len(data) != declared:
                    more = await reader.read(limit + 1 - len(data))
                    if not more:
                        break
                    data += bytes(more)
                return Answer(
                    response.status,
                    response.headers,
                    data[:limit],
                    truncated=len(data) > limit,
                )
        except rq.NetworkError as exc:
            if answered:
                raise
            raise _Unanswered(exc) from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
