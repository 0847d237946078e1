"""Slack sink: one Block Kit message per event, posted to an incoming webhook.

Docs: https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks (posting and
error handling), https://docs.slack.dev/reference/block-kit/blocks (block limits) and
https://api.slack.com/docs/rate-limits.

The message: a header with the outcome, a section whose fields name source, model, job id and
cost, the error text on failure, one image block per output Slack can show (png, jpg, gif),
other outputs as links, a context line with the event id, and a plain `text` fallback for
notifications. Every text is cut to Block Kit's limits and image blocks are capped, so a large
event never turns into an `invalid_blocks` refusal.

Slack answers a webhook POST with 200 `ok`, or an HTTP error whose body is a short error word:
400 `invalid_payload`/`too_many_attachments`, 403 `action_prohibited`/`invalid_token`/
`posting_to_general_channel_denied`, 404 `channel_not_found`/`no_service`, 410
`channel_is_archived`/`no_active_hooks`, 500 `rollup_error`. Those words (except
`rollup_error`) are permanent whatever the status; 429 carries `Retry-After`; other statuses
follow DESIGN.md. Slack allows about one message per second per webhook; the delivery engine
paces that (the registry gives slack `default_rate_per_s = 1.0`).

The webhook URL is a credential: no error message contains it.
"""

from __future__ import annotations

import json
import posixpath
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from handlers.sinks import spec
from handlers.sinks.base import SinkContext, SinkError, deadline_error, status_error
from handlers.sinks.spec import Options, SinkSpec
from receiver.core import masking
from receiver.core.http import Answer, header
from receiver.core.poster import PostFailed

WHAT = "the Slack webhook"

# Block Kit limits (docs.slack.dev/reference/block-kit/blocks).
MAX_BLOCKS = 50
HEADER_CHARS = 150
SECTION_TEXT_CHARS = 3000
FIELD_CHARS = 2000
MAX_FIELDS = 10
IMAGE_URL_CHARS = 3000
ALT_TEXT_CHARS = 2000
CONTEXT_TEXT_CHARS = 3000
# Our own caps: a readable message, and a fallback short enough for a notification.
MAX_IMAGE_BLOCKS = 10
ERROR_CHARS = 1500
FALLBACK_CHARS = 3000

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif"})
# A backtick would close the error's code block; this modifier letter looks the same.
BACKTICK_LOOKALIKE = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT
# URL characters kept as they are inside `<url|text>`; everything else is percent-encoded.
LINK_SAFE = "!#$%&'()*+,-./:;=?@[]~_"

# Error words Slack documents for incoming webhooks: resending the same message cannot help.
PERMANENT_ERRORS = frozenset(
    {
        "invalid_payload",
        "user_not_found",
        "channel_not_found",
        "channel_is_archived",
        "action_prohibited",
        "posting_to_general_channel_denied",
        "too_many_attachments",
        "no_service",
        "no_service_id",
        "no_team",
        "team_disabled",
        "invalid_token",
        "no_active_hooks",
        "no_text",
        "missing_text_or_fallback_or_attachments",
        "invalid_blocks",
        "invalid_blocks_format",
    }
)

HEADLINES = {
    "completed": "✅ Generation completed",
    "failed": "❌ Generation failed",
    "expired": "⌛ Generation expired",
    "queued": "🕒 Generation queued",
    "processing": "⏳ Generation processing",
}


# -- the message -----------------------------------------------------------------------------


def build_message(event: Mapping[str, Any]) -> dict[str, Any]:
    """The incoming-webhook payload for `event`: Block Kit blocks plus a `text` fallback."""
    outputs = [str(url) for url in event.get("outputs") or []]
    images = [i for i, url in enumerate(outputs) if is_image_url(url)][:MAX_IMAGE_BLOCKS]
    blocks: list[dict[str, Any]] = [header_block(headline(event)), fields_block(event)]
    if event.get("error"):
        blocks.append(error_block(str(event["error"])))
    blocks.extend(image_block(outputs[i], i, len(outputs)) for i in images)
    others = [url for i, url in enumerate(outputs) if i not in images]
    if others:
        blocks.append(links_block(others))
    blocks.append(context_block(event))
    return {"text": fallback_text(event, len(outputs)), "blocks": blocks[:MAX_BLOCKS]}


def headline(event: Mapping[str, Any]) -> str:
    status = str(event.get("status") or "")
    return HEADLINES.get(status) or f"Webhook event {event.get('type', '')}".strip()


def header_block(text: str) -> dict[str, Any]:
    return {"type": "header", "text": plain(clip(text, HEADER_CHARS))}


def fields_block(event: Mapping[str, Any]) -> dict[str, Any]:
    values = {
        "Source": event.get("source"),
        "Model": event.get("model"),
        "Job ID": event.get("job_id"),
        "Cost": format_cost(event.get("cost")),
    }
    fields = [field(label, value) for label, value in values.items()]
    return {"type": "section", "fields": fields[:MAX_FIELDS]}


def field(label: str, value: Any) -> dict[str, Any]:
    room = FIELD_CHARS - len(label) - 3
    shown = "—" if value is None or value == "" else clip_escaped(str(value), room)
    return mrkdwn(f"*{label}*\n{shown}")


def format_cost(cost: Any) -> str | None:
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        return f"{cost:g}"
    return None if cost is None else str(cost)


def error_block(error: str) -> dict[str, Any]:
    """The error as a code block that always closes: no backtick of the error can end it
    early (they become U+02CB, a look-alike), and the cut to the limit happens inside the fences."""
    code = clip_escaped(error.replace("`", BACKTICK_LOOKALIKE), ERROR_CHARS)
    return {"type": "section", "text": mrkdwn(f"*Error*\n```{code}```")}


def image_block(url: str, index: int, total: int) -> dict[str, Any]:
    name = clip(posixpath.basename(url_path(url)) or "output", 200)
    return {
        "type": "image",
        "image_url": url,
        "alt_text": clip(f"Output {index + 1} of {total}: {name}", ALT_TEXT_CHARS),
        "title": plain(clip(f"Output {index + 1}: {name}", ALT_TEXT_CHARS)),
    }


def links_block(urls: Sequence[str]) -> dict[str, Any]:
    """Outputs without an image block, as links, cut to one section's text limit."""
    lines = ["*Other outputs*"]
    for shown, url in enumerate(urls):
        line = f"• <{link_target(url)}|{escape(link_name(url))}>"
        rest = len(urls) - shown
        if sum(len(x) + 1 for x in lines) + len(line) + 40 > SECTION_TEXT_CHARS:
            lines.append(f"… and {rest} more")
            break
        lines.append(line)
    return {"type": "section", "text": mrkdwn("\n".join(lines))}


def link_name(url: str) -> str:
    """The link text: the file name (else the URL) on one line, without `|`."""
    name = posixpath.basename(url_path(url)) or url
    return clip(" ".join(name.replace("|", "¦").split()), 100) or "output"


def url_path(url: str) -> str:
    """The path of `url`; "" for text urllib cannot split (an unclosed `[` in the host)."""
    try:
        return urllib.parse.urlsplit(url).path
    except ValueError:
        return ""


def link_target(url: str) -> str:
    """`url` safe inside `<…|…>`: `|`, `<`, `>`, whitespace, controls and non-ASCII are
    percent-encoded (`%` stays, so existing escapes keep their meaning), then `&` is escaped
    as Slack asks. The link still leads to the same resource; it cannot change the link text."""
    return escape(urllib.parse.quote(url, safe=LINK_SAFE, errors="replace"))


def context_block(event: Mapping[str, Any]) -> dict[str, Any]:
    parts = [
        f"`{event.get('id', '')}`",
        str(event.get("received_at") or ""),
        f"via {event.get('via') or 'webhook'}",
    ]
    text = clip_escaped(" · ".join(p for p in parts if p), CONTEXT_TEXT_CHARS)
    return {"type": "context", "elements": [mrkdwn(text)]}


def fallback_text(event: Mapping[str, Any], outputs: int) -> str:
    """The plain `text` Slack shows in notifications and where blocks cannot render."""
    text = f"{headline(event)}: {event.get('source', '')} job {event.get('job_id') or '—'}"
    if outputs:
        text += f" ({outputs} output{'s' if outputs != 1 else ''})"
    if event.get("error"):
        text += f" — {event['error']}"
    return clip_escaped(text, FALLBACK_CHARS)


def is_image_url(url: str) -> bool:
    """Whether Slack can show `url` in an image block: http(s), png/jpg/gif, short enough."""
    if len(url) > IMAGE_URL_CHARS:
        return False
    suffix = posixpath.splitext(url_path(url))[1].lower()
    return url.lower().startswith(("http://", "https://")) and suffix in IMAGE_EXTENSIONS


def plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def escape(text: str) -> str:
    """Slack's three control characters (docs.slack.dev: formatting text, escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clip_escaped(text: str, limit: int) -> str:
    """`text` escaped, then cut to `limit` without splitting an `&amp;`-style entity."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


# -- the answer ------------------------------------------------------------------------------


def classify(answer: Answer) -> int:
    """The status of a 2xx answer; otherwise a SinkError (permanent for Slack's error words)."""
    if 200 <= answer.status < 300:
        return answer.status
    word = answer.excerpt(100)
    raise status_error(
        f"{WHAT} answered {answer.status}" + (f": {word}" if word else ""),
        answer.status,
        header(answer.headers, "retry-after"),
        permanent=word in PERMANENT_ERRORS,
    )


class SlackSink:
    def __init__(self, url: str, ctx: SinkContext) -> None:
        self.url = url
        self.ctx = ctx

    async def send(self, event: Mapping[str, Any]) -> int | None:
        body = json.dumps(build_message(event), separators=(",", ":")).encode()
        try:
            answer = await self.ctx.post(self.url, body, {"Content-Type": "application/json"})
        except PostFailed as exc:
            raise self.transport_error(exc) from None
        except TimeoutError:
            raise deadline_error(f"POST {WHAT}", self.ctx.timeout_s) from None
        return classify(answer)

    def transport_error(self, exc: PostFailed) -> SinkError:
        """A network failure, worth a retry; the URL is cut out of whatever the client said."""
        detail = str(exc)
        for secret in (self.url, urllib.parse.urlsplit(self.url).path):
            if len(secret) > 1:
                detail = detail.replace(secret, WHAT)
        detail = detail[:200]
        return SinkError(f"POST {WHAT}: {type(exc).__name__}" + (f": {detail}" if detail else ""))

    async def aclose(self) -> None:
        return None


# -- configuration ---------------------------------------------------------------------------


def check(options: Options) -> list[str]:
    """The webhook URL (an http:// one too: tests and proxies point it at 127.0.0.1)."""
    return spec.http_url(options, "url")


def describe(options: Options) -> str:
    return "a Slack incoming webhook"  # its URL is the credential: nothing of it is shown


def secrets(options: Options) -> list[str]:
    """The whole webhook URL, and its path (the token) on its own."""
    url = options.get("url")
    if not isinstance(url, str):
        return []
    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:  # check refuses such a URL; the whole of it is still masked
        path = ""
    return [url, path, *masking.url_secrets(url)]


def create(name: str, options: Options, ctx: SinkContext) -> SlackSink:
    return SlackSink(options["url"], ctx)


SPEC = SinkSpec(
    "slack", create, check, describe, secrets, required=frozenset({"url"}), default_rate_per_s=1.0
)
