"""The delivery hot path's HTTP client: one POST, capped and deadline-bound, on aiohttp.

Measured in bench/client (CPU of the sending process per POST of a small event, 16 in flight):
httpx 1.1-1.4 ms, httpx over the aiohttp transport 0.29 ms, aiohttp 0.09 ms. Delivery sends
every event to every sink, so its POSTs go through aiohttp directly; everything else that talks
HTTP (polls, S3 output fetches with their SSRF guard, JWKS) keeps httpx, where the rate is low.

One Poster per sink: its own connection pool sized to the sink's concurrency, so a slow sink's
connections never queue another sink's sends.

Idle pooled connections are dropped after KEEPALIVE_S, before the common server idle timeouts
(uvicorn and Node 5 s, nginx 75 s) close them under us. A POST that fails on a reused connection
before any answer (the server closed it as we wrote: "Server disconnected", "Can not write
request body") is sent once more on a fresh connection, as aiohttp does on its own only for
idempotent methods: the sink most likely never saw it, and a failed attempt would cost the event
one of its `max_attempts` and count toward pausing the sink. Delivery is at-least-once anyway
(receivers deduplicate by event id), so the rare resend of a request that did arrive is safe.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Mapping

import aiohttp
import httpx

from receiver.core.http import Answer

KEEPALIVE_S = 3.0


async def _on_reuse(
    _session: aiohttp.ClientSession,
    ctx: types.SimpleNamespace,
    _params: aiohttp.TraceConnectionReuseconnParams,
) -> None:
    ctx.trace_request_ctx["reused"] = True


_REUSE = aiohttp.TraceConfig()
_REUSE.on_connection_reuseconn.append(_on_reuse)
_REUSE.freeze()


class PostFailed(Exception):
    """The POST did not get an answer: connection refused or reset, DNS, a broken answer.
    (A timeout is TimeoutError, as everywhere.)"""


class Poster:
    """POSTs bodies and reads at most `limit` bytes of each answer, all within a deadline."""

    def __init__(self, max_connections: int, user_agent: str = "hookyard") -> None:
        self.max_connections = max_connections
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:  # created inside the running loop, on first use
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.max_connections, keepalive_timeout=KEEPALIVE_S
                ),
                trace_configs=[_REUSE],
                headers={"User-Agent": self.user_agent},
                auto_decompress=False,  # the excerpt we keep is of the bytes sent
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._session

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        limit: int,
        deadline_s: float,
    ) -> Answer:
        """POST `body`; the whole exchange ends within `deadline_s` (TimeoutError otherwise)
        and at most `limit` bytes of the answer are read (`truncated` says there was more)."""
        state: dict[str, bool] = {}  # set by the exchange: "reused", "answered"
        try:
            async with asyncio.timeout(deadline_s):
                try:
                    return await self._exchange(url, body, headers, limit, state)
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                    if not state.get("reused") or state.get("answered"):
                        raise
                    return await self._exchange(url, body, headers, limit, {})
        except aiohttp.ClientError as exc:
            raise PostFailed(f"{type(exc).__name__}: {exc}") from None

    async def _exchange(
        self, url: str, body: bytes, headers: Mapping[str, str], limit: int, state: dict[str, bool]
    ) -> Answer:
        async with self._open().post(
            url, data=body, headers=dict(headers), allow_redirects=False, trace_request_ctx=state
        ) as response:
            state["answered"] = True
            data = await response.content.read(limit + 1)
            while len(data) <= limit and not response.content.at_eof():
                more = await response.content.read(limit + 1 - len(data))
                if not more:
                    break
                data += more
            return Answer(
                response.status,
                httpx.Headers(list(response.raw_headers)),
                data[:limit],
                truncated=len(data) > limit,
            )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
