"""Fetching output URLs from event payloads without becoming an SSRF proxy (DESIGN.md "Security").

Output URLs come from provider payloads, so they are untrusted. A fetch is allowed only over
http(s); the host is resolved with the event loop's getaddrinfo and every address it resolves
to is checked with `ipaddress`: loopback, private, link-local, multicast, reserved, unspecified
and other non-global addresses are refused unless the sink sets `allow_private_networks`. The
connection then goes to the address that was checked (the URL's host stays in `Host` and in TLS
SNI, so certificates are still verified), so a DNS answer that changes between check and connect
cannot sneak past. Redirects are followed by hand, a few at most, each target checked the same
way. Bodies are read in chunks under a byte cap; a declared `Content-Length` over the cap is
refused before reading; an error answer is read only up to `EXCERPT_BYTES`. `timeout_s` bounds
each read; the caller bounds the whole fetch (the S3 sink: `output_timeout_s` per output).

Failures are SinkErrors: a refused URL, a body over the cap and 404/410 (any 4xx but 408, 409,
425, 429) are permanent; 5xx, timeouts, DNS and connection failures are transient.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import httpx

from handlers.sinks.base import SinkError, check_answer
from receiver.core.http import (
    ACCEPT_ENCODING,
    EXCERPT_BYTES,
    Answer,
    declared_length,
    decoded_chunks,
    read_capped,
)

ALLOWED_SCHEMES = frozenset({"http", "https"})
MAX_REDIRECTS = 5

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect for one URL: the URL itself, or the URL pinned to a checked address."""

    url: httpx.URL
    connect_url: httpx.URL
    headers: dict[str, str]
    extensions: dict[str, str]


def is_public(address: IPAddress) -> bool:
    """True when `address` is a globally routable unicast address."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if mapped is not None:
        return is_public(mapped)
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def parse_url(raw: str) -> httpx.URL:
    """`raw` as an http(s) URL with a host; anything else is a permanent refusal."""
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise refused(raw, "is not a valid URL") from None
    if url.scheme not in ALLOWED_SCHEMES:
        raise refused(raw, f"uses {url.scheme or 'no'} scheme; only http and https are fetched")
    if not url.host:
        raise refused(raw, "has no host")
    return url


def refused(url: str, why: str) -> SinkError:
    return SinkError(f"output URL {url[:200]} {why}", permanent=True)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (the event loop's getaddrinfo, so it never blocks)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise SinkError(f"cannot resolve output host {host[:100]}: {exc}") from None
    # The scope of a link-local IPv6 answer ("fe80::1%eth0") is not part of the address.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def check_target(url: httpx.URL, allow_private: bool) -> Target:
    """Where to connect for `url`, after refusing non-public destinations (unless allowed)."""
    if allow_private:
        return Target(url, url, {}, {})
    host = url.raw_host.decode("ascii")  # IDNA-encoded, as DNS and TLS want it
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = await resolve(host, port)
    bad = [a for a in addresses if not is_public(a)]
    if bad or not addresses:
        raise refused(str(url), f"resolves to a non-public address ({bad[0] if bad else 'none'})")
    return Target(
        url,
        url.copy_with(host=str(addresses[0])),
        {"Host": url.netloc.decode("ascii")},
        {"sni_hostname": host} if url.scheme == "https" else {},
    )


@contextlib.asynccontextmanager
async def open_output(
    http: httpx.AsyncClient, raw_url: str, *, timeout_s: float, allow_private: bool
) -> AsyncIterator[httpx.Response]:
    """GET `raw_url` safely; yield the 2xx response with its body not yet read."""
    url = parse_url(raw_url)
    for _ in range(MAX_REDIRECTS + 1):
        target = await check_target(url, allow_private)
        response = await _send(http, target, timeout_s)
        try:
            location = response.headers.get("location")
            if response.is_redirect and location:
                url = parse_url(str(url.join(location)))
                continue
            await _check(response, f"GET output {str(url)[:200]}")
            yield response
            return
        finally:
            await response.aclose()
    raise SinkError(
        f"output URL {raw_url[:200]} redirects more than {MAX_REDIRECTS} times", permanent=True
    )


async def _check(response: httpx.Response, what: str) -> None:
    """Classify a non-2xx answer, reading only the start of its body for the message."""
    if response.is_success:
        return
    body = b""
    with contextlib.suppress(httpx.HTTPError):
        body, _ = await read_capped(response, EXCERPT_BYTES)
    check_answer(Answer(response.status_code, response.headers, body), what)


async def _send(http: httpx.AsyncClient, target: Target, timeout_s: float) -> httpx.Response:
    request = http.build_request(
        "GET",
        target.connect_url,
        headers={**target.headers, "Accept-Encoding": ACCEPT_ENCODING},
        extensions=target.extensions,
        timeout=timeout_s,
    )
    try:
        return await http.send(request, stream=True, follow_redirects=False)
    except httpx.HTTPError as exc:
        what = f"GET output {str(target.url)[:200]}"
        raise SinkError(f"{what}: {type(exc).__name__}: {str(exc)[:100]}") from None


async def body_chunks(
    response: httpx.Response, max_bytes: int, label: str
) -> AsyncGenerator[bytes, None]:
    """The body in chunks; a permanent SinkError as soon as it grows past `max_bytes`."""
    declared = declared_length(response.headers)
    if declared is not None and declared > max_bytes:
        raise too_large(label, max_bytes)
    total = 0
    try:
        async for chunk in decoded_chunks(response):
            total += len(chunk)
            if total > max_bytes:
                raise too_large(label, max_bytes)
            yield chunk
    except httpx.HTTPError as exc:
        raise SinkError(f"reading output {label[:200]}: {type(exc).__name__}") from None


def too_large(label: str, max_bytes: int) -> SinkError:
    return SinkError(
        f"output {label[:200]} is larger than max_output_bytes ({max_bytes})", permanent=True
    )


async def parts(chunks: AsyncIterator[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """Regroup `chunks` into pieces of exactly `size` bytes (the last one may be shorter)."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
