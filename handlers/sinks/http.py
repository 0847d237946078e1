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

import json
import time
from collections.abc import Mapping
from typing import Any

from handlers.sinks.base import SinkContext, check_answer, deadline_error, transport_error
from receiver.core import signing
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
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
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


def create(name: str, options: Mapping[str, Any], ctx: SinkContext) -> HttpSink:
    headers = options.get("headers") or {}
    return HttpSink(str(options["url"]), ctx, options.get("secret"), headers)
