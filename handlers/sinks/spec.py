"""What a sink type says about its own configuration, and the option checks sink types share.

Each sink module ends with a `SPEC`: the keys it takes, how it checks them, how it says where
it sends without showing a credential, which of its values are secrets, and how it is built.
settings.py and the CLI loop over the registry (`handlers.sinks.SINK_SPECS`) and never name a
type, so a rule lives in one module and `hookyard check` refuses exactly what `serve` would
(both load the config through the same `check`).

The checks here take the option table as written in TOML and return problems, each naming
the key and the fix and never echoing a value that may be a credential (a URL, a header).
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from handlers.sinks.base import Sink, SinkContext

Options = Mapping[str, Any]

# Keys every sink takes: how deliveries to it are retried and paced (DESIGN.md "Delivery").
# settings.py checks these; a spec checks only its own.
COMMON_KEYS = frozenset(
    {
        "type",
        "retry_schedule_s",
        "max_attempts",
        "concurrency",
        "rate_per_s",
        "timeout_s",
        "outputs_from",  # wait for an s3 sink's mirrored copies and send those (delivery.py)
    }
)

# A space or control character in a URL is a typo; clients disagree on what they do with one.
_URL_JUNK = re.compile(r"[\s\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """One sink type, as its module describes it.

    `check` is the one place its options are validated; `create` gets options `check`
    accepted (keys left out take the sink's defaults) and does not look at them again.
    `describe` and `secrets` read the same accepted options."""

    type: str
    create: Callable[[str, Options, SinkContext], Sink]
    # The type's own checks of the keys present (required keys are checked by `check`).
    check_options: Callable[[Options], list[str]]
    # Where the sink sends, safe to print in the banner and `hookyard check`.
    describe: Callable[[Options], str]
    # The values of these options no log line, banner or API answer may show.
    secrets: Callable[[Options], list[str]]
    required: frozenset[str]
    optional: frozenset[str] = frozenset()
    default_rate_per_s: float | None = None  # a pace the destination imposes (Slack: 1/s)

    @property
    def keys(self) -> frozenset[str]:
        """The type's own keys: what `create`, `describe` and `secrets` are given."""
        return self.required | self.optional

    @property
    def allowed(self) -> frozenset[str]:
        return COMMON_KEYS | self.keys

    def check(self, options: Options) -> list[str]:
        """Every problem of the type's own keys: each required one left out, then the type's
        checks of those present. Empty: `create` will accept these options."""
        missing = [
            f'{key} is required for a "{self.type}" sink'
            for key in sorted(self.required - options.keys())
        ]
        return missing + self.check_options(options)


def http_url(options: Options, key: str) -> list[str]:
    """`options[key]`, if present, as a URL an HTTP client can send to: http(s), a host, a
    port that parses, nothing a client would silently drop or refuse at every send."""
    if key not in options:
        return []
    value = options[key]
    fix = f"{key} must be an http:// or https:// URL with a host, e.g. https://example.com/hook"
    if not isinstance(value, str):
        return [fix]
    if _URL_JUNK.search(value):
        return [f"{key} contains a space or a control character; percent-encode it (%20)"]
    try:
        parts = urllib.parse.urlsplit(value)
        host, port = parts.hostname, parts.port
    except ValueError:  # an unclosed [ in the host, a port that is no number or out of range
        return [f"{fix}; its host or port cannot be read"]
    if parts.scheme not in ("http", "https") or not host:
        return [fix]
    if port == 0:
        return [f"{key} has port 0; give the port the server listens on, or none"]
    return []


def text(options: Options, key: str, *, empty: bool = False) -> list[str]:
    """`options[key]`, if present, as a string (non-empty unless `empty`)."""
    if key not in options:
        return []
    value = options[key]
    if not isinstance(value, str):
        return [f"{key} must be a string, not {_shown(value)}"]
    return [] if empty or value else [f'{key} must not be empty ("")']


def flag(options: Options, key: str) -> list[str]:
    """`options[key]`, if present, as true or false."""
    if key not in options or isinstance(options[key], bool):
        return []
    return [f"{key} must be true or false, not {_shown(options[key])}"]


def whole(options: Options, key: str, minimum: int, maximum: int | None = None) -> list[str]:
    """`options[key]`, if present, as a whole number from `minimum` (to `maximum`)."""
    if key not in options:
        return []
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int):
        return [f"{key} must be a whole number, not {_shown(value)}"]
    if maximum is not None and not minimum <= value <= maximum:
        return [f"{key} must be at least {minimum} and at most {maximum}, not {value!r}"]
    return [] if value >= minimum else [f"{key} must be at least {minimum}, not {value!r}"]


def seconds(options: Options, key: str, minimum: float) -> list[str]:
    """`options[key]`, if present, as a finite number of seconds of at least `minimum`."""
    if key not in options:
        return []
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return [f"{key} must be a number of seconds, not {_shown(value)}"]
    return [] if value >= minimum else [f"{key} must be at least {minimum:g}, not {value!r}"]


def _shown(value: Any) -> str:
    """A wrong value in a message: a non-string as written, a string only by its kind (it may
    be a credential put under the wrong key)."""
    return "a string" if isinstance(value, str) else repr(value)[:60]
