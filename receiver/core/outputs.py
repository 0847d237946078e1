"""Durable outputs: what a mirroring sink reports, and the event a waiting sink sends.

Provider output URLs expire (Replicate deletes outputs after an hour, CDN links are signed),
so a sink with `outputs_from = "<s3 sink>"` sends the s3 sink's mirrored copies instead. The
s3 sink stays sans-store: it returns what it mirrored (`Sent`), the delivery engine records it
in the store with the delivery's outcome, and builds the waiting sinks' event from those rows
(`with_mirrors`). Both sides need these types, so they live in the core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MirroredOutput:
    """Output `index` of an event, copied to s3://bucket/key by a mirroring sink."""

    index: int
    bucket: str
    key: str
    content_type: str


@dataclass(frozen=True, slots=True)
class Sent:
    """A send's result when there is more to it than a status code: the outputs a mirroring
    sink stored (recorded with the delivery's outcome)."""

    status_code: int | None
    mirrored: tuple[MirroredOutput, ...] = ()


def status_of(result: int | Sent | None) -> tuple[int | None, tuple[MirroredOutput, ...]]:
    """A sink's return value as (status code, mirrored outputs)."""
    if isinstance(result, Sent):
        return result.status_code, result.mirrored
    return result, ()


def with_mirrors(event: Mapping[str, Any], links: Sequence[str | None]) -> dict[str, Any]:
    """The event a waiting sink sends. With a working link for every output: `outputs` are the
    links and the provider's URLs move to `provider_outputs`. Otherwise (the mirror ended dead,
    or never ran) the provider's URLs go out as they are, with `mirror_failed: true`, so the
    receiver knows they will expire. An event without outputs is sent unchanged."""
    document = dict(event)
    outputs = event.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        return document
    if len(links) == len(outputs) and all(link is not None for link in links):
        document["provider_outputs"] = list(outputs)
        document["outputs"] = list(links)
    else:
        document["mirror_failed"] = True
    return document

