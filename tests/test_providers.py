"""Provider adapters: recorded payloads through parse_webhook, and junk that must never raise."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers import providers
from handlers.providers import generic, renderful, rendergrid
from handlers.providers.base import Provider, WebhookContext
from receiver.core import events
from receiver.core.events import Event
from tests.test_signing import RENDERGRID_PRESET

FIXTURES = Path(__file__).parent / "fixtures"

RG_COMPLETED_ID = "c0ea4d5b-c965-4943-aaad-76fda0c53ca9"
RG_FAILED_ID = "5b0214ae-9e39-460a-820a-f6ae3e24400b"
RG_URL = "https://cdn.rendergrid.io/images/2026/07/02/c0ea4d5b/8b5f7dcb_0_req_c0ea4d5b.jpg"
RF_CDN = "https://cdn.renderful.ai/generations"


def fixture_context(
    provider: str,
    name: str,
    *,
    source: str | None = None,
    headers: dict[str, str] | None = None,
    message_id: str | None = None,
) -> WebhookContext:
    body = (FIXTURES / provider / name).read_bytes()
    return payload_context(
        provider, json.loads(body), body=body, source=source, headers=headers, message_id=message_id
    )


def payload_context(
    provider: str,
    payload: Any,
    *,
    body: bytes | None = None,
    source: str | None = None,
    headers: dict[str, str] | None = None,
    message_id: str | None = None,
) -> WebhookContext:
    return WebhookContext(
        source=source or provider,
        provider=provider,
        headers=headers or {},
        body=json.dumps(payload).encode() if body is None else body,
        payload=payload,
        message_id=message_id,
    )


def rendergrid_headers(
    event: str, delivery_id: str = "dlv_01", ts: str = "1795341659"
) -> dict[str, str]:
    return {
        "X-Webhook-Event": event,
        "X-Webhook-Delivery-ID": delivery_id,
        "X-Timestamp": ts,
        "X-Webhook-Signature-256": "sha256=" + "0" * 64,
    }


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def assert_unrecognized(event: Event, ctx: WebhookContext, job_id: str | None) -> None:
    assert event.type == events.UNRECOGNIZED
    assert event.job_id == job_id
    assert event.status is None
    assert event.outputs == ()
    assert event.raw == ctx.payload
    assert event.idempotency_key == f"{ctx.source}:unrecognized:sha256:{sha256_hex(ctx.body)}"


# --- Rendergrid ---------------------------------------------------------------------------------


def test_rendergrid_completed() -> None:
    ctx = fixture_context(
        "rendergrid", "completed.json", headers=rendergrid_headers("creation.completed")
    )
    event = rendergrid.parse_webhook(ctx)
    assert event.type == events.COMPLETED
    assert (event.source, event.provider, event.via) == ("rendergrid", "rendergrid", "webhook")
    assert event.job_id == RG_COMPLETED_ID
    assert event.status == "completed"
    assert event.outputs == (RG_URL,)
    assert event.cost == 0.1
    assert event.error is None
    assert event.idempotency_key == f"rendergrid:{RG_COMPLETED_ID}:completed"
    assert event.raw == ctx.payload


def test_rendergrid_failed_keeps_the_error() -> None:
    ctx = fixture_context(
        "rendergrid", "failed.json", headers=rendergrid_headers("creation.failed")
    )
    event = rendergrid.parse_webhook(ctx)
    assert event.type == events.FAILED
    assert event.job_id == RG_FAILED_ID
    assert event.status == "failed"
    assert event.outputs == ()
    assert event.cost == 0.1
    assert event.error == "Generation failed: the prompt was rejected by the safety filter"
    assert event.idempotency_key == f"rendergrid:{RG_FAILED_ID}:failed"
    assert event.raw == ctx.payload


def test_rendergrid_unknown_status_is_unrecognized_with_its_job_id() -> None:
    ctx = fixture_context("rendergrid", "unknown_status.json")
    event = rendergrid.parse_webhook(ctx)
    assert_unrecognized(event, ctx, job_id="9d1f7a3e-2b4c-4e8f-9a6d-0c5e8b7f1a24")


def test_rendergrid_missing_id_is_unrecognized() -> None:
    ctx = fixture_context(
        "rendergrid", "missing_id.json", headers=rendergrid_headers("creation.completed")
    )
    event = rendergrid.parse_webhook(ctx)
    assert_unrecognized(event, ctx, job_id=None)
    assert rendergrid.parse_webhook(ctx).idempotency_key == event.idempotency_key


def test_rendergrid_redelivery_has_the_same_key() -> None:
    """X-Webhook-Delivery-ID (and the timestamp) change per attempt; the key must not."""
    first = fixture_context(
        "rendergrid", "completed.json", headers=rendergrid_headers("creation.completed", "dlv_a")
    )
    retry = fixture_context(
        "rendergrid",
        "completed.json",
        headers=rendergrid_headers("creation.completed", "dlv_b", ts="1795341720"),
    )
    one, two = rendergrid.parse_webhook(first), rendergrid.parse_webhook(retry)
    assert one.id != two.id
    assert one.idempotency_key == two.idempotency_key == f"rendergrid:{RG_COMPLETED_ID}:completed"


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"id": "c1", "event": "creation.failed"}, {}, "failed"),
        ({"id": "c1"}, {"X-Webhook-Event": "creation.completed"}, "completed"),
        ({"id": "c1"}, {"x-webhook-event": "creation.failed"}, "failed"),
        ({"id": "c1", "status": None, "event": "creation.completed"}, {}, "completed"),
        ({"id": "c1", "status": "COMPLETED"}, {}, "completed"),
        ({"id": "c1", "status": "processing"}, {}, "processing"),
    ],
)
def test_rendergrid_status_falls_back_to_the_event_name(
    body: dict[str, Any], headers: dict[str, str], status: str
) -> None:
    event = rendergrid.parse_webhook(payload_context("rendergrid", body, headers=headers))
    assert event.status == status
    assert event.idempotency_key == f"rendergrid:c1:{status}"


def test_rendergrid_error_object_gives_its_message() -> None:
    body = {"id": "c1", "status": "failed", "error": {"code": "ERR_X", "message": "model crashed"}}
    assert rendergrid.parse_webhook(payload_context("rendergrid", body)).error == "model crashed"


def test_rendergrid_key_uses_the_source_name() -> None:
    ctx = fixture_context("rendergrid", "completed.json", source="rg-eu")
    assert rendergrid.parse_webhook(ctx).idempotency_key == f"rg-eu:{RG_COMPLETED_ID}:completed"


# --- Renderful ----------------------------------------------------------------------------------


def test_renderful_nested_completed() -> None:
    ctx = fixture_context("renderful", "completed_nested.json")
    event = renderful.parse_webhook(ctx)
    assert event.type == events.COMPLETED
    assert event.job_id == "gen_7f3c2a91d4e84b0c"
    assert event.status == "completed"
    assert event.outputs == (
        f"{RF_CDN}/gen_7f3c2a91d4e84b0c/0.png",
        f"{RF_CDN}/gen_7f3c2a91d4e84b0c/1.png",
    )
    assert event.model == "gpt-image-1-mini-i2i"
    assert event.cost is None
    assert event.error is None
    assert event.idempotency_key == "renderful:gen_7f3c2a91d4e84b0c:completed"
    assert event.raw == ctx.payload


def test_renderful_flat_completed_with_output_only() -> None:
    ctx = fixture_context("renderful", "completed_flat_output.json")
    event = renderful.parse_webhook(ctx)
    assert event.type == events.COMPLETED
    assert event.job_id == "gen_1b9e04c6a2f54d71"
    assert event.outputs == (f"{RF_CDN}/gen_1b9e04c6a2f54d71/0.png",)
    assert event.cost == 0.04
    assert event.error is None
    assert event.idempotency_key == "renderful:gen_1b9e04c6a2f54d71:completed"
    assert event.raw == ctx.payload


def test_renderful_failed() -> None:
    ctx = fixture_context("renderful", "failed.json")
    event = renderful.parse_webhook(ctx)
    assert event.type == events.FAILED
    assert event.job_id == "gen_c45d8e2f90ab4163"
    assert event.status == "failed"
    assert event.outputs == ()
    assert event.error == "Upstream model timed out"
    assert event.cost == 0.04
    assert event.idempotency_key == "renderful:gen_c45d8e2f90ab4163:failed"
    assert event.raw == ctx.payload


def test_renderful_garbage_is_unrecognized_with_a_stable_key() -> None:
    ctx = fixture_context("renderful", "garbage.json")
    event = renderful.parse_webhook(ctx)
    assert_unrecognized(event, ctx, job_id=None)
    assert renderful.parse_webhook(ctx).idempotency_key == event.idempotency_key


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("queued", "queued"),
        ("processing", "processing"),
        ("completed", "completed"),
        ("succeeded", "completed"),
        ("success", "completed"),
        ("failed", "failed"),
        ("error", "failed"),
        ("canceled", "failed"),
        ("cancelled", "failed"),
    ],
)
def test_renderful_status_words(word: str, status: str) -> None:
    event = renderful.parse_webhook(payload_context("renderful", {"id": "g1", "status": word}))
    assert event.status == status
    assert event.type == events.TYPE_OF_STATUS[status]


def test_renderful_status_from_the_event_name() -> None:
    body = {"event": "generation.failed", "data": {"id": "g1", "model": "m"}}
    event = renderful.parse_webhook(payload_context("renderful", body))
    assert (event.type, event.job_id, event.model) == (events.FAILED, "g1", "m")


def test_renderful_reads_outputs_and_output_without_repeats() -> None:
    body = {"id": "g1", "status": "completed", "outputs": ["https://a/1", "https://a/2"]}
    body["output"] = "https://a/1"
    event = renderful.parse_webhook(payload_context("renderful", body))
    assert event.outputs == ("https://a/1", "https://a/2")


def test_renderful_unknown_status_is_unrecognized_with_its_job_id() -> None:
    ctx = payload_context("renderful", {"event": "generation.held", "data": {"id": "g1"}})
    assert_unrecognized(renderful.parse_webhook(ctx), ctx, job_id="g1")
    ctx = payload_context("renderful", {"id": "g2", "status": "moderated"})
    assert_unrecognized(renderful.parse_webhook(ctx), ctx, job_id="g2")


# --- Generic ------------------------------------------------------------------------------------


def test_generic_replicate_prediction_keys_on_the_webhook_id() -> None:
    ctx = fixture_context(
        "generic", "replicate_prediction.json", source="replicate", message_id="msg_2Lh9KZBv"
    )
    event = generic.parse_webhook(ctx)
    assert event.type == events.RECEIVED
    assert (event.source, event.provider) == ("replicate", "generic")
    assert event.job_id == "gm3qorzdhgbfurvjtvhg6dckhu"
    assert event.status is None
    assert event.outputs == ()
    assert event.cost is None
    assert event.error is None
    assert event.idempotency_key == "replicate:msg_2Lh9KZBv"
    assert event.raw == ctx.payload


def test_generic_fal_webhook_keys_on_the_request_id() -> None:
    request_id = "123e4567-e89b-12d3-a456-426614174000"
    ctx = fixture_context("generic", "fal_webhook.json", source="fal", message_id=request_id)
    event = generic.parse_webhook(ctx)
    assert event.type == events.RECEIVED
    assert event.job_id == request_id
    assert event.status is None
    assert event.idempotency_key == f"fal:{request_id}"
    assert event.raw == ctx.payload


def test_generic_without_a_message_id_keys_on_the_body_hash() -> None:
    ctx = fixture_context("generic", "openai_event.json", source="openai")
    event = generic.parse_webhook(ctx)
    assert event.type == events.RECEIVED
    assert event.job_id == "evt_685343a1381c819085d44c354e1b330e"  # `id` comes before `data.id`
    assert event.status is None
    assert event.idempotency_key == f"openai:sha256:{sha256_hex(ctx.body)}"
    assert generic.parse_webhook(ctx).idempotency_key == event.idempotency_key
    assert event.raw == ctx.payload


@pytest.mark.parametrize(
    ("payload", "job_id"),
    [
        ({"data": {"id": "resp_1"}}, "resp_1"),
        ({"id": 7, "request_id": "", "job_id": "j1", "data": {"id": "d1"}}, "j1"),
        ({"data": ["x"]}, None),
        (["id", "x"], None),
        ("id", None),
        (None, None),
    ],
)
def test_generic_job_id(payload: Any, job_id: str | None) -> None:
    event = generic.parse_webhook(payload_context("generic", payload))
    assert (event.type, event.job_id) == (events.RECEIVED, job_id)


# --- Every provider -----------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [None, [], [1, {"id": "x"}], "completed", 3, 2.5, True, {}])
@pytest.mark.parametrize("provider", ["rendergrid", "renderful"])
def test_non_objects_are_unrecognized(provider: str, payload: Any) -> None:
    ctx = payload_context(provider, payload)
    assert_unrecognized(providers.get(provider).parse_webhook(ctx), ctx, job_id=None)


def test_registry() -> None:
    assert set(providers.PROVIDERS) == {
        "rendergrid", "renderful", "generic", "rendernet", "revid", "genly"}
    assert providers.PROVIDERS["rendergrid"] is rendergrid.PROVIDER
    assert providers.PROVIDERS["generic"] is generic.PROVIDER
    assert providers.PROVIDERS["renderful"] is renderful.PROVIDER
    for name, provider in providers.PROVIDERS.items():
        assert provider.name == name
        assert providers.get(name) is provider
    with pytest.raises(KeyError, match="replicate"):
        providers.get("replicate")  # Replicate is served by the generic provider


def test_signature_presets() -> None:
    assert rendergrid.PROVIDER.signature_preset == RENDERGRID_PRESET
    assert renderful.PROVIDER.signature_preset == {
        "scheme": "hmac",
        "encoding": "hex",
        "algorithm": "sha256",
        "template": "{body}",
    }
    assert generic.PROVIDER.signature_preset is None


# --- Property: any JSON value parses to a known event type, never an exception ------------------

WORDS = st.sampled_from(
    [
        *renderful.STATUSES,
        "moderated",
        "creation.completed",
        "creation.failed",
        "generation.completed",
        "generation.failed",
        "https://cdn.example/x.png",
    ]
)
KEYS = st.sampled_from(
    [
        *("id", "status", "event", "data", "error", "cost", "model"),
        *("result_urls", "outputs", "output", "request_id", "job_id"),
    ]
) | st.text(max_size=6)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | WORDS
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=24,
)


@pytest.mark.parametrize("name", sorted(providers.PROVIDERS))
@settings(database=None, max_examples=300)
@given(
    payload=JSON_VALUES,
    event_header=st.none() | WORDS | st.text(max_size=12),
    message_id=st.none() | st.text(max_size=12),
)
def test_parse_webhook_never_raises(
    name: str, payload: Any, event_header: str | None, message_id: str | None
) -> None:
    provider: Provider = providers.get(name)
    headers = {} if event_header is None else {"X-Webhook-Event": event_header}
    ctx = payload_context(name, payload, source="src", headers=headers, message_id=message_id)
    event = provider.parse_webhook(ctx)
    assert isinstance(event, Event)
    assert event.type in events.EVENT_TYPES
    assert event.raw is payload
    assert event.idempotency_key.startswith("src:")
    if event.type in events.STATUS_OF_TYPE:
        assert event.status == events.STATUS_OF_TYPE[event.type]
        assert event.idempotency_key == f"src:{event.job_id}:{event.status}"
