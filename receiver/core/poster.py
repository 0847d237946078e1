"""The delivery hot path's HTTP client: one POST, capped and deadline-bound, on aiohttp.

Measured in bench/client (CPU of the sending process per POST of a small event, 16 in flight):
httpx 1.1-1.4 ms, httpx over the aiohttp transport 0.29 ms, aiohttp 0.09 ms. Delivery sends
every event to every sink, so its POSTs go through aiohttp directly; everything else that talks
HTTP (polls, S3 output fetches with their SSRF guard, JWKS) keeps httpx, where the rate is low.

One Poster per sink: its own connection pool sized to the sink's concurrency, so a slow sink's
connections never queue another sink's sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp
import httpx

from receiver.core.http import Answer


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
                connector=aiohttp.TCPConnector(limit=self.max_connections),
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
        session = self._open()
        try:
            async with asyncio.timeout(deadline_s):
                async with session.post(
                    url, data=body, headers=dict(headers), allow_redirects=False
                ) as response:
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
        except aiohttp.ClientError as exc:
            raise PostFailed(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
