"""The sink types hookyard knows, each described by its own module's SPEC.

An explicit, hand-written registry: `[sinks.NAME] type = "…"` must name one of these. What a
type takes, checks, shows and keeps secret is in its module (handlers.sinks.spec says what a
SPEC holds); nothing outside names a type.
"""

from __future__ import annotations

from handlers.sinks import http, jsonl, s3, slack
from handlers.sinks.spec import COMMON_KEYS, SinkSpec

SINK_SPECS: dict[str, SinkSpec] = {
    spec.type: spec for spec in (http.SPEC, slack.SPEC, s3.SPEC, jsonl.SPEC)
}

__all__ = ["COMMON_KEYS", "SINK_SPECS", "SinkSpec"]
