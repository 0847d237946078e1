"""The sink types hookyard knows: their configuration keys and how to build one.

An explicit, hand-written registry: `[sinks.NAME] type = "…"` must name one of these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from handlers.sinks import http, jsonl, s3, slack
from handlers.sinks.base import Sink, SinkContext

# Keys every sink takes: how deliveries to it are retried and paced (DESIGN.md "Delivery").
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


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """One sink type: its configuration keys (besides COMMON_KEYS) and its factory."""

    # create(sink name, its own config keys, context)
    create: Callable[[str, Mapping[str, Any], SinkContext], Sink]
    required: frozenset[str]
    optional: frozenset[str] = frozenset()
    default_rate_per_s: float | None = None  # a pace the destination imposes (Slack: 1/s)

    @property
    def allowed(self) -> frozenset[str]:
        return COMMON_KEYS | self.required | self.optional


SINK_SPECS: dict[str, SinkSpec] = {
    "http": SinkSpec(
        http.create, required=frozenset({"url"}), optional=frozenset({"secret", "headers"})
    ),
    "slack": SinkSpec(slack.create, required=frozenset({"url"}), default_rate_per_s=1.0),
    "s3": SinkSpec(
        s3.create,
        required=frozenset({"bucket"}),
        optional=frozenset(
            {
                "prefix",
                "endpoint_url",
                "region",
                "mirror_outputs",
                "allow_private_networks",
                "max_output_bytes",
                "output_timeout_s",
                "public_base_url",
                "presign_expiry_s",
            }
        ),
    ),
    "jsonl": SinkSpec(jsonl.create, required=frozenset({"path"})),
}
