"""HTTP helpers every outbound call shares: capped, deadline-bound reads and answer rules.

Every read from the network is capped in size and bounded in time as a whole (DESIGN.md
"Security"): a peer that answers with an endless body, or drips one byte every few seconds,
costs at most `limit` bytes of memory and `deadline_s` seconds, never more.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import httpx

# Transient by DESIGN.md "Delivery": 408, 409, 425, 429 and every 5xx. Other 4xx are permanent.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
# How much of an answer we do not need is kept (for the attempt's error text).
EXCERPT_BYTES = 4096
RETRY_AFTER_MAX_S = 3600.0  # a longer wait than a peer asks for is read as this
# Encodings we ask for and inflate ourselves, in pieces of at most INFLATE_BYTES.
ACCEPT_ENCODING = "gzip, deflate"
INFLATE_BYTES = 64 * 1024


def is_permanent(status: int) -> bool:
    """A 4xx answer that resending the same request cannot change."""
    return 400 <= status < 500 and status not in RETRYABLE_4XX


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever the case of the mapping's keys (a plain dict in tests)."""
    found = headers.get(name)
    if found is not None:
        return found
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: ASCII delta-seconds or an HTTP date; None if absent
    or junk. Never raises, whatever the peer sent (`²` is a digit to str.isdigit, not to us)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value[:12]), RETRY_AFTER_MAX_S) if len(value) <= 12 else RETRY_AFTER_MAX_S
    try:
        when = email.utils.parsedate_to_datetime(value)
        seconds = when.timestamp() - (time.time() if now is None else now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_MAX_S)


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer read under a cap: `body` holds at most the cap; `truncated` says more
    was sent (and was not read)."""

    status: int
    headers: Mapping[str, str]  # case-insensitive: httpx's Headers, pyreqwest's HeaderMap
    body: bytes
    truncated: bool = False

    def excerpt(self, limit: int = 200) -> str:
        """The start of the body as text for an error message: control characters (a NUL
        that PostgreSQL text refuses, escape sequences for a terminal) become U+FFFD."""
        text = self.body[:limit].decode("utf-8", "replace").strip()
        return "".join(c if c.isprintable() or c in "\n\t" else "\ufffd" for c in text)


class TooLarge(Exception):
    """The answer was larger than the caller's cap (raised only with `refuse_larger`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer is larger than {limit} bytes")
        self.limit = limit


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The Content-Length a peer declared, or None when absent or junk (never raises)."""
    declared = header(headers, "content-length") or ""
    if declared.isascii() and declared.isdigit() and len(declared) < 19:
        return int(declared)
    return None


async def read_capped(
    response: httpx.Response, limit: int, *, refuse_larger: bool = False
) -> tuple[bytes, bool]:
    """At most `limit` bytes of a streamed response body; (bytes, truncated). Reading stops
    at the cap, whatever the peer declared or keeps sending. With `refuse_larger`, TooLarge
    instead of a truncated body (a declared Content-Length over the cap is not read at all)."""
    declared = declared_length(response.headers)
    if refuse_larger and declared is not None and declared > limit:
        raise TooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in decoded_chunks(response):
        room = limit - size
        if len(chunk) > room:
            if refuse_larger:
                raise TooLarge(limit)
            chunks.append(chunk[:room])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


async def decoded_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body, inflated from gzip/deflate in pieces of at most INFLATE_BYTES. httpx's own
    decoding inflates each network chunk whole, so 64 KiB of a compressed answer could become
    64 MB in memory before any cap saw it; here a cap stops the inflating too."""
    if response.is_stream_consumed:  # read whole before we got it (httpx.MockTransport)
        yield response.content
        return
    encoding = (header(response.headers, "content-encoding") or "identity").strip().lower()
    if encoding in ("identity", ""):
        async for chunk in response.aiter_raw():
            yield chunk
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise httpx.DecodingError(f"the answer uses Content-Encoding {encoding[:40]} unasked")
    inflater = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)  # a gzip or zlib header
    async for chunk in response.aiter_raw():
        data = chunk
        while data and not inflater.eof:
            try:
                piece = inflater.decompress(data, INFLATE_BYTES)
            except zlib.error as exc:
                raise httpx.DecodingError(f"the {encoding} body is corrupt: {exc}") from None
            if piece:
                yield piece
            data = inflater.unconsumed_tail


async def request_capped(
    client: httpx.AsyncClient,
    method: str,
    url: str | httpx.URL,
    *,
    limit: int,
    deadline_s: float,
    refuse_larger: bool = False,
    **kwargs: object,
) -> Answer:
    """One request whose whole exchange (connect, send, headers, body) ends within
    `deadline_s` (TimeoutError otherwise) and whose body is read up to `limit` bytes."""
    headers = httpx.Headers(kwargs.pop("headers", None))  # type: ignore[arg-type]
    headers.setdefault("Accept-Encoding", ACCEPT_ENCODING)
    async with asyncio.timeout(deadline_s):
        async with client.stream(
            method, url, headers=headers, **kwargs  # type: ignore[arg-type]
        ) as response:
            body, truncated = await read_capped(response, limit, refuse_larger=refuse_larger)
            return Answer(response.status_code, response.headers, body, truncated)
