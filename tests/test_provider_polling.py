"""Provider status clients: recorded answers through parse_answer, requests from build_request,
and junk that must never raise (it reads as `running`, so the scheduler retries to the deadline).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers import providers
from handlers.providers import base, genly, renderful, rendergrid, rendernet, revid
from handlers.providers.base import (
    DONE,
    NOT_FOUND,
    RUNNING,
    PollAnswer,
    PollContext,
    WebhookContext,
)
from receiver.core import events
from receiver.core.events import Event
from tests.fake_providers import (
    FAKES,
    FakeGenly,
    FakeProvider,
    FakeRenderful,
    FakeRendergrid,
    FakeRenderNet,
    FakeRevid,
)

FIXTURES = Path(__file__).parent / "fixtures"
POLLED = ("rendergrid", "renderful", "rendernet", "revid", "genly")
POLLING_ONLY = ("rendernet", "revid", "genly")
API_KEY = "sk_live_TESTKEY_0123456789"

RG_COMPLETED_ID = "c0ea4d5b-c965-4943-aaad-76fda0c53ca9"
RG_FAILED_ID = "5b0214ae-9e39-460a-820a-f6ae3e24400b"
RG_URL = "https://cdn.rendergrid.io/images/2026/07/02/c0ea4d5b/8b5f7dcb_0_req_c0ea4d5b.jpg"
RF_CDN = "https://cdn.renderful.ai/generations"
RN_CDN = "https://assets.rendernet.ai/media"
GENLY_CDN = "https://cdn.genly.ai/renders"
FAKE_KEY = "fake_key_0123"
FAST_INTERVAL = 0.2  # FakeRendergrid's per-creation interval in these tests, not 5 s
FAST: dict[str, dict[str, Any]] = {"rendergrid": {"min_interval_s": FAST_INTERVAL}}
RN_ERR = "Something went wrong, please try again"
NO_ITEM_STATUS = "unreadable: a media item without a status"


def poll_context(
    provider: str,
    job_id: str = "job_1",
    *,
    source: str | None = None,
    base_url: str | None = None,
    api_key: str | None = API_KEY,
    metadata: dict[str, Any] | None = None,
) -> PollContext:
    poll = providers.get(provider).poll
    assert poll is not None
    return PollContext(
        source=source or provider,
        provider=provider,
        job_id=job_id,
        base_url=base_url or poll.base_url,
        api_key=api_key,
        metadata=metadata or {},
    )


def fixture_bytes(provider: str, name: str) -> bytes:
    return (FIXTURES / provider / name).read_bytes()


def parse(
    provider: str, name: str, job_id: str = "job_1", status_code: int = 200, **ctx: Any
) -> PollAnswer:
    poll = providers.get(provider).poll
    assert poll is not None
    return poll.parse_answer(
        poll_context(provider, job_id, **ctx), status_code, fixture_bytes(provider, name)
    )


def done_event(answer: PollAnswer) -> Event:
    assert answer.state == DONE
    assert answer.event is not None
    return answer.event


def assert_poll_event(
    event: Event, provider: str, name: str, *, job_id: str, status: str, source: str | None = None
) -> None:
    """What every poll-made event shares: its source, key, via, and the answer as `raw`."""
    source = source or provider
    assert event.type == events.TYPE_OF_STATUS[status]
    assert (event.source, event.provider) == (source, provider)
    assert (event.job_id, event.status, event.via) == (job_id, status, "poll")
    assert event.idempotency_key == f"{source}:{job_id}:{status}"
    assert event.raw == json.loads(fixture_bytes(provider, name))
    assert event.is_terminal


def webhook_event(provider: str, name: str, headers: dict[str, str] | None = None) -> Event:
    body = fixture_bytes(provider, name)
    ctx = WebhookContext(
        source=provider, provider=provider, headers=headers or {}, body=body,
        payload=json.loads(body),
    )
    return providers.get(provider).parse_webhook(ctx)


# --- Running answers: no event, the provider's word kept -------------------------------------


@pytest.mark.parametrize(
    ("provider", "name", "word"),
    [
        ("rendergrid", "poll_queued.json", "queued"),
        ("rendergrid", "poll_running.json", "processing"),
        ("rendergrid", "poll_unknown_status.json", "moderating"),
        ("renderful", "poll_queued.json", "queued"),
        ("renderful", "poll_running.json", "processing"),
        ("rendernet", "poll_running.json", "2 pending"),
        ("rendernet", "poll_partly_done.json", "1 success, 1 pending"),
        ("rendernet", "poll_empty_media.json", "no media yet"),
        ("rendernet", "poll_err_other.json", f"err: INTERNAL_ERROR: {RN_ERR}"),
        ("revid", "poll_running.json", "processing"),
        ("revid", "poll_unknown_word.json", "upscaling"),
        ("genly", "poll_running.json", "processing"),
    ],
)
def test_running_answers(provider: str, name: str, word: str) -> None:
    assert parse(provider, name) == PollAnswer(RUNNING, status=word)


# --- Not found ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "word"),
    [
        ("rendergrid", "ERR_NOT_FOUND"),
        ("renderful", "Not found"),
        ("rendernet", "NOT_FOUND: Generation not found"),
        ("revid", "Not Found"),
        ("genly", "Render not found"),
    ],
)
def test_404_in_the_providers_shape_is_not_found(provider: str, word: str) -> None:
    assert parse(provider, "poll_not_found.json", status_code=404) == PollAnswer(
        NOT_FOUND, status=word
    )


@pytest.mark.parametrize("provider", POLLED)
@pytest.mark.parametrize("body", [b"", b"<html>Not Found</html>", b"[]", b'{"x": 1}'])
def test_404_with_any_body_is_not_found(provider: str, body: bytes) -> None:
    poll = providers.get(provider).poll
    assert poll is not None
    answer = poll.parse_answer(poll_context(provider), 404, body)
    assert answer == PollAnswer(NOT_FOUND, status="http 404")


def test_rendernet_2xx_err_saying_not_found_is_not_found() -> None:
    assert parse("rendernet", "poll_not_found.json", status_code=200) == PollAnswer(
        NOT_FOUND, status="NOT_FOUND: Generation not found"
    )


@pytest.mark.parametrize(
    ("err", "state"),
    [
        ("generation does not exist", NOT_FOUND),
        ({"message": "Generation Not Found"}, NOT_FOUND),
        ({"code": "not_found"}, NOT_FOUND),
        ("rate limited", RUNNING),
        ({"code": "UNAUTHORIZED", "message": "bad key"}, RUNNING),
        ({}, RUNNING),
        ([], RUNNING),
    ],
)
def test_rendernet_err_without_data(err: Any, state: str) -> None:
    for key in ("err", "error"):  # the README says `err`, the reference page `error`
        body = json.dumps({"data": None, key: err}).encode()
        assert rendernet.parse_answer(poll_context("rendernet"), 200, body).state == state


# --- Rendergrid -----------------------------------------------------------------------------


def test_rendergrid_completed() -> None:
    event = done_event(parse("rendergrid", "poll_completed.json", RG_COMPLETED_ID))
    assert_poll_event(
        event, "rendergrid", "poll_completed.json", job_id=RG_COMPLETED_ID, status="completed"
    )
    assert event.outputs == (RG_URL,)
    assert (event.error, event.cost, event.model) == (None, 0.1, None)


def test_rendergrid_failed() -> None:
    answer = parse("rendergrid", "poll_failed.json", RG_FAILED_ID)
    assert answer.status == "failed"
    event = done_event(answer)
    assert_poll_event(event, "rendergrid", "poll_failed.json", job_id=RG_FAILED_ID, status="failed")
    assert event.outputs == ()
    assert event.error == "Generation failed: the prompt was rejected by the safety filter"
    assert event.cost == 0.1


@pytest.mark.parametrize(
    ("webhook", "event_name", "poll", "job_id"),
    [
        ("completed.json", "creation.completed", "poll_completed.json", RG_COMPLETED_ID),
        ("failed.json", "creation.failed", "poll_failed.json", RG_FAILED_ID),
    ],
)
def test_rendergrid_webhook_and_poll_make_one_event(
    webhook: str, event_name: str, poll: str, job_id: str
) -> None:
    pushed = webhook_event("rendergrid", webhook, {"X-Webhook-Event": event_name})
    polled = done_event(parse("rendergrid", poll, job_id))
    assert (pushed.via, polled.via) == ("webhook", "poll")
    assert pushed.idempotency_key == polled.idempotency_key
    assert (pushed.type, pushed.job_id, pushed.outputs, pushed.error) == (
        polled.type, polled.job_id, polled.outputs, polled.error,
    )


# --- Renderful ------------------------------------------------------------------------------


def test_renderful_completed_with_outputs_only() -> None:
    job = "gen_7f3c2a91d4e84b0c"
    event = done_event(parse("renderful", "poll_completed_outputs_only.json", job))
    assert_poll_event(
        event, "renderful", "poll_completed_outputs_only.json", job_id=job, status="completed"
    )
    assert event.outputs == (f"{RF_CDN}/{job}/0.png", f"{RF_CDN}/{job}/1.png")
    assert (event.error, event.cost, event.model) == (None, 0.08, "gpt-image-1-mini-i2i")


def test_renderful_completed_with_output_only() -> None:
    job = "gen_1b9e04c6a2f54d71"
    event = done_event(parse("renderful", "poll_completed_output_only.json", job))
    assert_poll_event(
        event, "renderful", "poll_completed_output_only.json", job_id=job, status="completed"
    )
    assert event.outputs == (f"{RF_CDN}/{job}/0.png",)
    assert (event.error, event.cost, event.model) == (None, 0.04, "gpt-image-1-mini-i2i")


def test_renderful_reads_outputs_then_output_without_repeats() -> None:
    job = "gen_5e2a7c0d31f94b88"
    event = done_event(parse("renderful", "poll_completed_both.json", job))
    assert event.outputs == (f"{RF_CDN}/{job}/0.png", f"{RF_CDN}/{job}/1.png")


def test_renderful_failed() -> None:
    job = "gen_c45d8e2f90ab4163"
    event = done_event(parse("renderful", "poll_failed.json", job))
    assert_poll_event(event, "renderful", "poll_failed.json", job_id=job, status="failed")
    assert event.outputs == ()
    assert (event.error, event.cost) == ("Upstream model timed out", 0.04)


@pytest.mark.parametrize(
    ("webhook", "poll", "job_id"),
    [
        ("completed_nested.json", "poll_completed_outputs_only.json", "gen_7f3c2a91d4e84b0c"),
        ("completed_flat_output.json", "poll_completed_output_only.json", "gen_1b9e04c6a2f54d71"),
        ("failed.json", "poll_failed.json", "gen_c45d8e2f90ab4163"),
    ],
)
def test_renderful_webhook_and_poll_make_one_event(webhook: str, poll: str, job_id: str) -> None:
    pushed = webhook_event("renderful", webhook)
    polled = done_event(parse("renderful", poll, job_id))
    assert pushed.idempotency_key == polled.idempotency_key
    assert (pushed.type, pushed.job_id, pushed.outputs, pushed.error) == (
        polled.type, polled.job_id, polled.outputs, polled.error,
    )


def test_renderful_tolerates_the_webhook_envelope_and_extra_words() -> None:
    body = json.dumps({"data": {"id": "g1", "status": "Succeeded", "output": "https://a/1"}})
    event = done_event(renderful.parse_answer(poll_context("renderful", "g1"), 200, body.encode()))
    assert (event.status, event.outputs) == ("completed", ("https://a/1",))


# --- RenderNet ------------------------------------------------------------------------------


def test_rendernet_completed() -> None:
    job = "gen_01JD3Q8ZP6R4M2"
    answer = parse("rendernet", "poll_completed.json", job)
    assert answer.status == "2 success"
    event = done_event(answer)
    assert_poll_event(event, "rendernet", "poll_completed.json", job_id=job, status="completed")
    assert event.outputs == (f"{RN_CDN}/med_01JD3Q8ZPA1.png", f"{RN_CDN}/med_01JD3Q8ZPA2.png")
    assert (event.error, event.cost, event.model) == (None, None, None)


def test_rendernet_mixed_batch_completes_with_the_successes_and_counts_the_rest() -> None:
    job = "gen_01JD3R2K7T9W5X"
    answer = parse("rendernet", "poll_mixed.json", job)
    assert answer.status == "2 success, 1 failed, 1 censored"
    event = done_event(answer)
    assert_poll_event(event, "rendernet", "poll_mixed.json", job_id=job, status="completed")
    assert event.outputs == (f"{RN_CDN}/med_01JD3R2K7V1.png", f"{RN_CDN}/med_01JD3R2K7V4.png")
    assert event.error == "2 of 4 media items did not succeed (1 failed, 1 censored)"


def test_rendernet_censored_is_failed() -> None:
    job = "gen_01JD3S5B4N8C0Y"
    event = done_event(parse("rendernet", "poll_censored.json", job))
    assert_poll_event(event, "rendernet", "poll_censored.json", job_id=job, status="failed")
    assert event.outputs == ()
    assert event.error == "1 of 1 media items did not succeed (1 censored)"


def test_rendernet_all_failed() -> None:
    job = "gen_01JD3T9H2F6D7Z"
    event = done_event(parse("rendernet", "poll_failed.json", job))
    assert_poll_event(event, "rendernet", "poll_failed.json", job_id=job, status="failed")
    assert event.error == "2 of 2 media items did not succeed (2 failed)"


def test_rendernet_unknown_item_word_keeps_the_batch_running() -> None:
    media = [{"status": "success", "url": "https://a/1"}, {"status": "upscaling"}]
    body = {"data": {"media": media}}
    answer = rendernet.parse_answer(poll_context("rendernet"), 200, json.dumps(body).encode())
    assert answer == PollAnswer(RUNNING, status="1 success, 1 upscaling")


def test_rendernet_success_url_falls_back_to_output() -> None:
    body = {"data": {"media": [{"status": "SUCCESS", "output": "https://a/1"}]}, "err": {}}
    event = done_event(
        rendernet.parse_answer(poll_context("rendernet"), 200, json.dumps(body).encode())
    )
    assert (event.status, event.outputs, event.error) == ("completed", ("https://a/1",), None)


# --- RevidAPI -------------------------------------------------------------------------------


def test_revid_completed() -> None:
    event = done_event(parse("revid", "poll_completed.json", "job_abc123"))
    assert_poll_event(
        event, "revid", "poll_completed.json", job_id="job_abc123", status="completed"
    )
    assert event.outputs == (
        "https://storage.googleapis.com/revid-outputs/jobs/job_abc123/image.png",
    )
    assert (event.error, event.cost, event.model) == (None, None, None)


def test_revid_failed() -> None:
    event = done_event(parse("revid", "poll_failed.json", "job_abc123"))
    assert_poll_event(event, "revid", "poll_failed.json", job_id="job_abc123", status="failed")
    assert (event.outputs, event.error) == ((), "Model provider rejected the prompt")


def test_revid_error_word_in_any_case_is_failed() -> None:
    answer = parse("revid", "poll_error_word.json", "job_abc123")
    assert answer.status == "ERROR"
    event = done_event(answer)
    assert_poll_event(event, "revid", "poll_error_word.json", job_id="job_abc123", status="failed")
    assert (event.outputs, event.error) == ((), None)


# --- Genly ----------------------------------------------------------------------------------


def test_genly_completed_takes_string_cover_srcs_in_order() -> None:
    job = "6751b0e2c4a1f20d9e3b7a15"
    event = done_event(parse("genly", "poll_completed.json", job))
    assert_poll_event(event, "genly", "poll_completed.json", job_id=job, status="completed")
    assert event.outputs == (f"{GENLY_CDN}/{job}/0.png", f"{GENLY_CDN}/{job}/1.png")
    assert (event.error, event.cost, event.model) == (None, None, None)


def test_genly_failed() -> None:
    job = "6751b1f7a9c3e40b2d6f8c21"
    event = done_event(parse("genly", "poll_failed.json", job))
    assert_poll_event(event, "genly", "poll_failed.json", job_id=job, status="failed")
    assert (event.outputs, event.error) == ((), "control_image could not be decoded")


def test_genly_dead_is_failed() -> None:
    job = "6751b2a04e8d51c7f0a9b3d6"
    answer = parse("genly", "poll_dead.json", job)
    assert answer.status == "dead"
    event = done_event(answer)
    assert_poll_event(event, "genly", "poll_dead.json", job_id=job, status="failed")
    assert (event.outputs, event.error) == ((), None)


# --- Every provider -------------------------------------------------------------------------


@pytest.mark.parametrize("provider", POLLED)
def test_event_carries_the_source_name_and_metadata(provider: str) -> None:
    name = "poll_completed.json" if provider != "renderful" else "poll_failed.json"
    meta = {"order": 42, "tags": ["a"]}
    event = done_event(parse(provider, name, "j9", source="team-eu", metadata=meta))
    assert event.source == "team-eu"
    assert event.provider == provider
    assert event.idempotency_key == f"team-eu:j9:{event.status}"
    assert event.metadata == meta


@pytest.mark.parametrize("provider", POLLED)
@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", "unreadable: not a JSON object"),
        (b"<html>Bad Gateway</html>", "unreadable: not a JSON object"),
        (b"\xff\xfe\x00", "unreadable: not a JSON object"),
        (b"[1, 2]", "unreadable: not a JSON object"),
        (b'"completed"', "unreadable: not a JSON object"),
        (b"[" * 100_000, "unreadable: not a JSON object"),
    ],
)
def test_unreadable_2xx_is_running(provider: str, body: bytes, status: str) -> None:
    poll = providers.get(provider).poll
    assert poll is not None
    answer = poll.parse_answer(poll_context(provider), 200, body)
    assert answer == PollAnswer(RUNNING, status=status)


@pytest.mark.parametrize(
    ("provider", "body", "status"),
    [
        ("rendergrid", {"id": "c1"}, "unreadable: no status word"),
        ("rendergrid", {"id": "c1", "status": 3}, "unreadable: no status word"),
        ("renderful", {"id": "g1", "status": None}, "unreadable: no status word"),
        ("rendernet", {"data": {"media": None}, "err": None}, "unreadable: no media list"),
        ("rendernet", {"data": {"media": [{"url": "x"}]}}, NO_ITEM_STATUS),
        ("rendernet", {"data": {"media": ["success"]}}, NO_ITEM_STATUS),
        ("rendernet", {"data": None, "err": None}, "unreadable: no data"),
        ("revid", {"result": None}, "unreadable: no status word"),
        ("genly", {"_id": "r1", "status": "completed"}, "unreadable: no phase"),
    ],
)
def test_wrong_shape_is_running(provider: str, body: Any, status: str) -> None:
    poll = providers.get(provider).poll
    assert poll is not None
    answer = poll.parse_answer(poll_context(provider), 200, json.dumps(body).encode())
    assert answer == PollAnswer(RUNNING, status=status)


@pytest.mark.parametrize("provider", POLLED)
def test_other_status_codes_are_running_not_raised(provider: str) -> None:
    """The scheduler should not pass them, but a stray 401/503 must not end a job."""
    poll = providers.get(provider).poll
    assert poll is not None
    for code in (401, 429, 503):
        answer = poll.parse_answer(poll_context(provider), code, b'{"error": "x"}')
        assert answer == PollAnswer(RUNNING, status=f"unreadable: http {code}")


def test_long_unknown_words_are_capped() -> None:
    body = json.dumps({"status": "x" * 5000}).encode()
    answer = revid.parse_answer(poll_context("revid"), 200, body)
    assert answer.state == RUNNING
    assert answer.status == "x" * 100


# --- Requests -------------------------------------------------------------------------------

REQUESTS = [
    ("rendergrid", "https://api.rendergrid.io/api/public/v1", "/creations/{id}", "Authorization",
     f"Bearer {API_KEY}"),
    ("renderful", "https://api.renderful.ai/api/v1", "/generations/{id}", "Authorization",
     f"Bearer {API_KEY}"),
    ("rendernet", "https://api.rendernet.ai", "/pub/v1/generations/{id}", "X-API-KEY", API_KEY),
    ("revid", "https://ai.revidapi.com", "/v1/jobs/{id}", "Authorization", f"Bearer {API_KEY}"),
    ("genly", "https://genly.ai", "/api/renders/{id}", "Authorization", f"Bearer {API_KEY}"),
]


@pytest.mark.parametrize(("provider", "root", "path", "header", "value"), REQUESTS)
def test_build_request(provider: str, root: str, path: str, header: str, value: str) -> None:
    poll = providers.get(provider).poll
    assert poll is not None
    assert poll.base_url == root
    request = poll.build_request(poll_context(provider, "job_42"))
    assert request.method == "GET"
    assert request.url == root + path.format(id="job_42")
    assert request.headers == {"Accept": "application/json", header: value}


@pytest.mark.parametrize(("provider", "root", "path", "header", "value"), REQUESTS)
def test_build_request_joins_the_sources_base_url(
    provider: str, root: str, path: str, header: str, value: str
) -> None:
    poll = providers.get(provider).poll
    assert poll is not None
    for base_url in ("http://127.0.0.1:9100", "http://127.0.0.1:9100/", "https://proxy/rg/v1"):
        request = poll.build_request(poll_context(provider, "job_42", base_url=base_url))
        assert request.url == base_url.rstrip("/") + path.format(id="job_42")
        assert request.headers[header] == value


@pytest.mark.parametrize(("provider", "root", "path", "header", "value"), REQUESTS)
def test_build_request_quotes_the_job_id(
    provider: str, root: str, path: str, header: str, value: str
) -> None:
    """A job id comes from POST /v1/jobs: it must stay one path segment."""
    poll = providers.get(provider).poll
    assert poll is not None
    request = poll.build_request(poll_context(provider, "../a/b?c=1#d"))
    assert request.url == root + path.format(id="..%2Fa%2Fb%3Fc%3D1%23d")


@pytest.mark.parametrize("provider", POLLED)
def test_the_key_goes_only_in_its_header(provider: str) -> None:
    poll = providers.get(provider).poll
    assert poll is not None
    request = poll.build_request(poll_context(provider))
    assert API_KEY not in request.url
    carrying = [name for name, value in request.headers.items() if API_KEY in value]
    assert carrying == [name for name in request.headers if name != "Accept"]
    assert len(carrying) == 1
    without = poll.build_request(poll_context(provider, api_key=None))
    assert without.headers == {"Accept": "application/json"}


# --- Modules and registry -------------------------------------------------------------------


def test_limits_and_kinds() -> None:
    table = {name: providers.get(name) for name in POLLED}
    assert {name: p.pushes_webhooks for name, p in table.items()} == {
        "rendergrid": True, "renderful": True, "rendernet": False, "revid": False, "genly": False,
    }
    limits = {
        name: (p.poll.min_interval_s, p.poll.rate_per_min)
        for name, p in table.items()
        if p.poll is not None
    }
    assert limits == {
        "rendergrid": (5.0, 120.0),
        "renderful": (0.0, None),
        "rendernet": (0.0, None),
        "revid": (0.0, 1000.0),
        "genly": (0.0, None),
    }
    revid_poll = table["revid"].poll
    assert revid_poll is not None and 20 <= revid_poll.first_delay_s <= 45
    for provider in table.values():
        assert provider.poll is not None
        assert provider.poll.first_delay_s > 0
        assert 0 < provider.poll.max_interval_s <= 60
    assert providers.get("generic").poll is None


def test_polling_only_providers_are_registered_without_a_preset() -> None:
    for name, module in (("rendernet", rendernet), ("revid", revid), ("genly", genly)):
        assert providers.get(name) is module.PROVIDER
        assert module.PROVIDER.name == name
        assert module.PROVIDER.signature_preset is None
    assert providers.get("rendergrid") is rendergrid.PROVIDER


@pytest.mark.parametrize("provider", POLLING_ONLY)
def test_polling_only_webhooks_are_unrecognized(provider: str) -> None:
    body = b'{"status": "completed", "id": "x"}'
    ctx = WebhookContext(
        source=provider, provider=provider, headers={}, body=body, payload=json.loads(body)
    )
    event = providers.get(provider).parse_webhook(ctx)
    assert event.type == events.UNRECOGNIZED
    assert event.idempotency_key == f"{provider}:unrecognized:sha256:{base.body_digest(body)}"


@pytest.mark.parametrize(
    ("provider", "payload", "job_id"),
    [
        ("rendergrid", {"event": "creation.completed", "id": RG_COMPLETED_ID}, RG_COMPLETED_ID),
        ("rendergrid", {"data": {"id": "x"}}, None),
        ("renderful", {"event": "generation.completed", "data": {"id": "gen_1"}}, "gen_1"),
        ("renderful", {"id": "gen_2", "status": "completed"}, "gen_2"),
        ("renderful", {"data": {"id": 7}}, None),
        ("rendernet", {"data": {"generation_id": "gen_3", "media": []}, "err": None}, "gen_3"),
        ("rendernet", {"generation_id": "gen_4"}, "gen_4"),
        ("revid", {"job_id": "job_abc123"}, "job_abc123"),
        ("revid", {"status": "completed"}, None),
        ("genly", {"render_id": "r1"}, "r1"),
        ("genly", {"_id": "r2", "phase": "completed"}, "r2"),
        ("genly", {"id": "r3"}, None),
    ],
)
def test_job_id_of(provider: str, payload: Any, job_id: str | None) -> None:
    poll = providers.get(provider).poll
    assert poll is not None
    assert poll.job_id_of(payload) == job_id


@pytest.mark.parametrize("provider", POLLED)
@pytest.mark.parametrize("payload", [None, [], "id", 3, {"data": None}, {"data": ["x"]}])
def test_job_id_of_junk_is_none(provider: str, payload: Any) -> None:
    poll = providers.get(provider).poll
    assert poll is not None
    assert poll.job_id_of(payload) is None


# --- Property: no bytes and no status code make parse_answer raise ---------------------------

WORDS = st.sampled_from(
    [
        *rendergrid.STATUSES, *renderful.STATUSES, *rendernet.MEDIA_STATUSES, *revid.STATUSES,
        *genly.PHASES, "ERROR", "Completed", "upscaling", "https://cdn.example/x.png",
        "ERR_NOT_FOUND", "not found",
    ]
)
KEYS = st.sampled_from(
    [
        "id", "status", "phase", "data", "err", "error", "media", "url", "output", "outputs",
        "result", "result_urls", "cover_src", "cost", "model", "message", "code", "misc",
    ]
) | st.text(max_size=5)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | WORDS
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=30,
)
BODIES = st.binary(max_size=200) | JSON_VALUES.map(lambda value: json.dumps(value).encode())


@pytest.mark.parametrize("provider", POLLED)
@settings(database=None, max_examples=300, deadline=None)
@given(body=BODIES, status_code=st.sampled_from([200, 404]))
def test_parse_answer_never_raises(provider: str, body: bytes, status_code: int) -> None:
    poll = providers.get(provider).poll
    assert poll is not None
    answer = poll.parse_answer(poll_context(provider, "j1", source="src"), status_code, body)
    assert isinstance(answer, PollAnswer)
    assert answer.state in (RUNNING, DONE, NOT_FOUND)
    assert isinstance(answer.status, str) and len(answer.status) <= 200
    if status_code == 404:
        assert answer.state == NOT_FOUND
    if answer.state != DONE:
        assert answer.event is None
        return
    event = answer.event
    assert event is not None
    assert event.type in (events.COMPLETED, events.FAILED)
    assert event.status == events.STATUS_OF_TYPE[event.type]
    assert (event.job_id, event.via) == ("j1", "poll")
    assert event.idempotency_key == f"src:j1:{event.status}"
    assert event.raw == json.loads(body)
    assert all(isinstance(url, str) and url for url in event.outputs)


# --- The fake providers (tests/fake_providers.py) answer what the parsers read ---------------


def poll_fake(client: httpx.Client, fake: FakeProvider, provider: str, job_id: str,
              api_key: str | None = FAKE_KEY) -> tuple[int, PollAnswer]:
    poll = providers.get(provider).poll
    assert poll is not None
    ctx = poll_context(provider, job_id, base_url=fake.base_url, api_key=api_key)
    request = poll.build_request(ctx)
    response = client.request(request.method, request.url, headers=dict(request.headers))
    if response.status_code == 404 or response.is_success:
        return response.status_code, poll.parse_answer(ctx, response.status_code, response.content)
    return response.status_code, PollAnswer(RUNNING, status=f"http {response.status_code}")


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as http:
        yield http


@pytest.mark.parametrize("provider", POLLED)
def test_fake_runs_then_completes(provider: str, client: httpx.Client) -> None:
    urls = ["https://cdn.example/a/0.png", "https://cdn.example/a/1.png"]
    with FAKES[provider](api_key=FAKE_KEY, **FAST.get(provider, {})) as fake:
        fake.set_job("job 1/x", state="completed", outputs=urls, running_polls=1)
        code, running = poll_fake(client, fake, provider, "job 1/x")
        assert (code, running.state) == (200, RUNNING)
        time.sleep(FAST_INTERVAL)
        code, done = poll_fake(client, fake, provider, "job 1/x")
        event = done_event(done)
        assert (code, event.status, event.job_id) == (200, "completed", "job 1/x")
        assert event.outputs == (tuple(urls) if provider != "revid" else (urls[0],))
        ours = {id(r) for r in fake.status_requests("job 1/x")}
        assert len(ours) == 2
        # only this test's requests: under xdist a stranger (another test's poller whose fake
        # had this port before) may knock too
        assert [status for r, status in fake.exchanges if id(r) in ours] == [200, 200]


@pytest.mark.parametrize("provider", POLLED)
def test_fake_failed_job(provider: str, client: httpx.Client) -> None:
    with FAKES[provider](api_key=FAKE_KEY) as fake:
        fake.set_job("j1", state="failed", error="model crashed")
        event = done_event(poll_fake(client, fake, provider, "j1")[1])
        assert (event.status, event.outputs) == ("failed", ())
        expected = "1 of 1 media items did not succeed (1 failed)"
        assert event.error == (expected if provider == "rendernet" else "model crashed")


@pytest.mark.parametrize("provider", POLLED)
def test_fake_unknown_job_wrong_key_and_injected_failures(
    provider: str, client: httpx.Client
) -> None:
    no_limit = {"min_interval_s": 0.0} if provider == "rendergrid" else {}
    with FAKES[provider](api_key=FAKE_KEY, **no_limit) as fake:
        code, answer = poll_fake(client, fake, provider, "nope")
        assert (code, answer.state) == (404, NOT_FOUND)
        assert answer.status != "http 404"  # the provider's own not-found shape was read
        assert poll_fake(client, fake, provider, "nope", api_key="wrong")[0] == 401
        assert poll_fake(client, fake, provider, "nope", api_key=None)[0] == 401
        fake.set_job("j1", state="running")
        fake.fail(2)
        codes = [poll_fake(client, fake, provider, "j1")[0] for _ in range(3)]
        assert codes == [500, 500, 200]
        fake.delay(0.3, times=1)
        started = time.monotonic()
        assert poll_fake(client, fake, provider, "j1")[0] == 200
        assert time.monotonic() - started >= 0.3
        recorded = fake.requests
        assert len(recorded) == 7
        assert all(a.at <= b.at for a, b in itertools.pairwise(recorded))


def test_fake_rendergrid_limits_per_creation_and_per_key(client: httpx.Client) -> None:
    defaults = FakeRendergrid()
    defaults.stop()  # never started: this only closes its socket
    assert (defaults.min_interval_s, defaults.rate_per_min, defaults.window_s) == (5.0, 120, 60.0)
    now = [1000.0]
    # The documented 5 s per creation; a per-key budget of 10 (not 120) keeps the test short.
    with FakeRendergrid(api_key=FAKE_KEY, clock=lambda: now[0], rate_per_min=10) as fake:
        fake.set_job("c1", state="running")
        url = f"{fake.base_url}/creations/c1"
        auth = {"Authorization": f"Bearer {FAKE_KEY}"}
        assert client.get(url, headers=auth).status_code == 200
        now[0] += 3.2
        again = client.get(url, headers=auth)
        assert again.status_code == 429
        assert again.headers["Retry-After"] == "2"
        assert again.json() == {"error": {"code": "ERR_RATE_LIMIT", "message": "Too many requests"}}
        now[0] += 1.8
        assert client.get(url, headers=auth).status_code == 200  # 5 s after the last answer
        # A fixed 60 s window per key: 3 used, 7 more pass, the next is 429 until it ends.
        codes = {client.get(f"{fake.base_url}/creations/x{i}", headers=auth).status_code
                 for i in range(7)}
        assert codes == {404}
        now[0] += 10
        over = client.get(f"{fake.base_url}/creations/x999", headers=auth)
        assert (over.status_code, over.headers["Retry-After"]) == (429, "45")
        assert over.json()["error"]["code"] == "ERR_RATE_LIMIT"
        now[0] += 45
        assert client.get(url, headers=auth).status_code == 200
        # Another key has its own budget and its own per-creation clock.
        fake.api_key = "other"
        assert client.get(url, headers={"Authorization": "Bearer other"}).status_code == 200


def test_fake_revid_overload(client: httpx.Client) -> None:
    with FakeRevid(api_key=FAKE_KEY) as fake:
        fake.set_job("job_1", state="upscaling")
        fake.overload(1)
        response = client.get(f"{fake.base_url}/v1/jobs/job_1",
                              headers={"Authorization": f"Bearer {FAKE_KEY}"})
        assert response.status_code == 503
        assert "overloaded" in response.json()["message"]
        answer = poll_fake(client, fake, "revid", "job_1")[1]
        assert answer == PollAnswer(RUNNING, status="upscaling")


def test_fake_rendernet_mixed_batch(client: httpx.Client) -> None:
    with FakeRenderNet(api_key=FAKE_KEY) as fake:
        fake.set_media("g1", [("success", "https://a/1"), ("censored", None)], running_polls=1)
        running = poll_fake(client, fake, "rendernet", "g1")[1]
        assert running == PollAnswer(RUNNING, status="2 pending")
        event = done_event(poll_fake(client, fake, "rendernet", "g1")[1])
        assert (event.status, event.outputs) == ("completed", ("https://a/1",))
        assert event.error == "1 of 2 media items did not succeed (1 censored)"
        fake.set_job("g2", state="censored")
        assert done_event(poll_fake(client, fake, "rendernet", "g2")[1]).status == "failed"


@pytest.mark.parametrize("where", ["outputs", "output", "both"])
def test_fake_renderful_output_fields(where: str, client: httpx.Client) -> None:
    with FakeRenderful(api_key=FAKE_KEY) as fake:
        fake.set_job("g1", state="completed", outputs=["https://a/1"], output_field=where,
                     cost=0.04)
        event = done_event(poll_fake(client, fake, "renderful", "g1")[1])
        assert (event.outputs, event.cost) == (("https://a/1",), 0.04)
        legacy = client.get(f"{fake.base_url}/predictions/g1/result",
                            headers={"Authorization": f"Bearer {FAKE_KEY}"})
        assert legacy.status_code == 404


def test_fake_genly_dead_and_running_for(client: httpx.Client) -> None:
    with FakeGenly(api_key=FAKE_KEY) as fake:
        fake.set_job("r1", state="dead", running_for_s=0.3)
        assert poll_fake(client, fake, "genly", "r1")[1] == PollAnswer(RUNNING, status="processing")
        time.sleep(0.35)
        answer = poll_fake(client, fake, "genly", "r1")[1]
        assert (answer.status, done_event(answer).status) == ("dead", "failed")


@pytest.mark.parametrize("provider", ["rendergrid", "renderful", "rendernet", "revid", "genly"])
def test_an_answer_with_a_lone_surrogate_is_unreadable_not_an_event(provider: str) -> None:
    """`\\ud800` parses to a str that no UTF-8 store can hold: retried until the deadline."""
    poll = providers.get(provider).poll
    assert poll is not None
    ctx = PollContext(provider, provider, "j1", poll.base_url, "key")
    body = b'{"id": "j1", "status": "completed", "phase": "completed", "result": "\\ud800"}'
    if provider == "rendernet":  # its answers are an envelope of media items
        body = b'{"data": {"media": [{"status": "success", "url": "\\ud800"}]}, "err": null}'
    assert poll.parse_answer(ctx, 200, body.replace(b"\\ud800", b"x")).state == DONE
    answer = poll.parse_answer(ctx, 200, body)
    assert answer.state == RUNNING and answer.event is None
