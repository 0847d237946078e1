"""The sink types hookyard knows, with the configuration keys each takes.

An explicit, hand-written registry: `[sinks.NAME] type = "…"` must name one of these.
"""

from __future__ import annotations

from dataclasses import dataclass

# Keys every sink takes: how deliveries to it are retried and paced (DESIGN.md "Delivery").
COMMON_KEYS = frozenset(
    {"type", "retry_schedule_s", "max_attempts", "concurrency", "rate_per_s", "timeout_s"}
)


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """The configuration keys of one sink type, besides COMMON_KEYS."""

    required: frozenset[str]
    optional: frozenset[str] = frozenset()

    @property
    def allowed(self) -> frozenset[str]:
        return COMMON_KEYS | self.required | self.optional


SINK_SPECS: dict[str, SinkSpec] = {
    "http": SinkSpec(required=frozenset({"url"}), optional=frozenset({"secret", "headers"})),
    "slack": SinkSpec(required=frozenset({"url"})),
    "s3": SinkSpec(
        required=frozenset({"bucket"}),
        optional=frozenset(
            {
                "prefix",
                "endpoint_url",
                "region",
                "mirror_outputs",
                "allow_private_networks",
                "max_output_bytes",
            }
        ),
    ),
    "jsonl": SinkSpec(required=frozenset({"path"})),
}
