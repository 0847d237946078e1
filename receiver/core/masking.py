"""Credentials out of every output: configured URLs shown masked, secret values masked in text.

A configured URL may carry credentials in its userinfo (`http://user:pass@host/`) or its query
(`?token=…`). Wherever one is shown (the banner, `hookyard check`) it goes through `mask_url`;
its credential parts (`url_secrets`) join the configured secrets that `mask_secrets` removes from
any text (log lines, the error texts of delivery attempts the admin API shows).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
REDACTED = "[redacted]"
MIN_SECRET = 4  # shorter values would mask ordinary words everywhere


def mask_url(url: str) -> str:
    """`url` safe to show: userinfo, every query value and the fragment become `***`
    (`http://***@host/path?token=***`); a URL that cannot be parsed is all `***`."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # a bad IPv6 literal or port: show nothing of it
        return MASK
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{MASK}@{host}{port}" if "@" in parts.netloc else f"{host}{port}"
    query = "&".join(_mask_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _mask_pair(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    return f"{name}={MASK}" if equals else MASK


def url_secrets(url: str) -> list[str]:
    """The credential parts of `url` as written and percent-decoded: user, password, the whole
    userinfo, each query value and the fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found: list[str] = []
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        found += [userinfo, *userinfo.split(":", 1)]
    for pair in parts.query.split("&") if parts.query else ():
        name, equals, value = pair.partition("=")
        found.append(value if equals else name)
    if parts.fragment:
        found.append(parts.fragment)
    decoded = [unquote(v) for v in found]
    return [v for v in dict.fromkeys([*found, *decoded]) if len(v) >= MIN_SECRET]


def ordered(secrets: Iterable[str]) -> tuple[str, ...]:
    """Distinct secrets worth masking, longest first (so a secret inside a longer one does not
    leave the rest of the longer one showing)."""
    return tuple(sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True))


def mask_secrets(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every occurrence of each of `secrets` (from `ordered`) replaced."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
