"""HTTP sink: POSTs the event JSON, signed with Standard Webhooks.

`webhook-id` is the event id, so a receiver can dedupe redeliveries and replays (delivery is
at-least-once); `webhook-timestamp` and `webhook-signature: v1,<base64>` come from the sink's
`whsec_` secret, so any Standard Webhooks library verifies it. Without a secret the request is
sent unsigned, still with `webhook-id` and `webhook-timestamp`.

The receiver's answer is read only up to `EXCERPT_BYTES` (kept for the attempt's error text),
and the whole exchange ends within the sink's `timeout_s`, however slowly or endlessly the
receiver answers.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from handlers.sinks import spec
from handlers.sinks.base import SinkContext, check_answer, deadline_error, transport_error
from handlers.sinks.spec import Options, SinkSpec
from receiver.core import jsonx, masking, signing
from receiver.core.errors import ConfigError
from receiver.core.poster import PostFailed


class HttpSink:
    def __init__(
        self,
        url: str,
        ctx: SinkContext,
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.ctx = ctx
        self.headers = dict(headers or {})
        self.signer = (
            signing.build_verifier({"scheme": "standard-webhooks"}, [secret]) if secret else None
        )

    async def send(self, event: Mapping[str, Any]) -> int | None:
        body = jsonx.dumps(event)
        headers = {**self.headers, "Content-Type": "application/json"}
        if self.signer is not None:
            headers.update(self.signer.sign(body, message_id=str(event["id"])))
        else:  # unsigned, but still the ids a receiver dedupes on
            headers.update(
                {"webhook-id": str(event["id"]), "webhook-timestamp": str(int(time.time()))}
            )
        what = f"POST {self.url}"
        try:
            answer = await self.ctx.post(self.url, body, headers)
        except PostFailed as exc:
            raise transport_error(exc, what) from None
        except TimeoutError:
            raise deadline_error(what, self.ctx.timeout_s) from None
        return check_answer(answer, what)

    async def aclose(self) -> None:
        return None


# -- configuration ---------------------------------------------------------------------------

# Headers hookyard sets on every request (or the client computes): a configured one would be
# overwritten or would break the request's framing.
OWN_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field name
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")  # printable ASCII on one line
# Header names whose values are credentials (Authorization, X-Api-Key, X-Auth-Token, …).
_CREDENTIAL_NAME = re.compile(r"auth|key|token|secret|password|signature|cookie", re.IGNORECASE)


def check(options: Options) -> list[str]:
    """url, headers and secret; whether url and headers clash only once both are well formed."""
    problems = [*spec.http_url(options, "url"), *header_problems(options)]
    return problems + (auth_problems(options) if not problems else []) + secret_problems(options)


def auth_problems(options: Options) -> list[str]:
    """Credentials in the URL become an Authorization header; the client refuses a second."""
    headers = options.get("headers", {})
    if "@" in urllib.parse.urlsplit(str(options.get("url", ""))).netloc and any(
        name.lower() == "authorization" for name in headers
    ):
        return [
            "headers: Authorization cannot go with credentials in url (user:password@); "
            "keep one of them"
        ]
    return []


def header_problems(options: Options) -> list[str]:
    """`headers`: a table of header names to values that every request can carry as given."""
    headers = options.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return ['headers must be a table of strings, e.g. { "X-Team" = "render" }']
    problems = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            problems.append(
                f"headers: {name[:60]!r} is not a header name (letters, digits and "
                "!#$%&'*+-.^_`|~ only)"
            )
        elif name.lower() in OWN_HEADERS:
            problems.append(f'headers: hookyard sets "{name}" itself; remove it')
        elif not _FIELD_VALUE.fullmatch(value):
            problems.append(f'headers: the value of "{name}" must be printable ASCII on one line')
    return problems


def secret_problems(options: Options) -> list[str]:
    """`secret`: a Standard Webhooks signing secret the signer accepts."""
    if "secret" not in options:
        return []
    secret = options["secret"]
    fix = (
        "secret must be a Standard Webhooks secret: whsec_ + base64 "
        "(e.g. whsec_ + the output of `openssl rand -base64 32`)"
    )
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        return [fix]
    try:
        signing.build_verifier({"scheme": "standard-webhooks"}, [secret])
    except ConfigError:  # its message would name `secrets[0]`, a key a sink does not have
        return [f"{fix}; what follows whsec_ is not valid base64"]
    return []


def describe(options: Options) -> str:
    return masking.mask_url(str(options["url"]))  # userinfo and query values may be credentials


def secrets(options: Options) -> list[str]:
    """The signing secret, the URL's credential parts and credential-looking header values."""
    found = masking.url_secrets(str(options["url"])) if "url" in options else []
    if isinstance(options.get("secret"), str):
        found.append(options["secret"])
    headers = options.get("headers")
    for name, value in headers.items() if isinstance(headers, dict) else ():
        if isinstance(value, str) and _CREDENTIAL_NAME.search(name):
            found.extend([value, value.partition(" ")[2]])  # "Bearer TOKEN": the token alone too
    return found


def create(name: str, options: Options, ctx: SinkContext) -> HttpSink:
    return HttpSink(options["url"], ctx, options.get("secret"), options.get("headers"))


SPEC = SinkSpec(
    "http",
    create,
    check,
    describe,
    secrets,
    required=frozenset({"url"}),
    optional=frozenset({"secret", "headers"}),
)
