"""The Slack sink: the Block Kit message within Slack's limits, and how Slack's answers classify."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from handlers.sinks import SINK_SPECS, slack
from handlers.sinks.base import SinkContext, SinkError
from tests.fakes import SLACK_ANSWERS, FakeSlack, Reply, free_port
from tests.support import CDN, make_event


def failed_event(error: str = "NSFW filter rejected the prompt") -> dict[str, Any]:
    return make_event(type="generation.failed", status="failed", outputs=[], error=error)


# -- Block Kit limits, checked independently of the sink's constants -------------------------


def check_limits(message: Mapping[str, Any]) -> None:
    """Fail if `message` breaks a documented Block Kit / incoming-webhook limit."""
    assert isinstance(message["text"], str) and message["text"].strip()
    assert len(message["text"]) <= 4000
    blocks = message["blocks"]
    assert 1 <= len(blocks) <= 50
    for block in blocks:
        CHECKS[block["type"]](block)


def check_header(block: Mapping[str, Any]) -> None:
    assert block["text"]["type"] == "plain_text"
    assert 0 < len(block["text"]["text"]) <= 150


def check_section(block: Mapping[str, Any]) -> None:
    assert "text" in block or "fields" in block
    if "text" in block:
        assert 0 < len(block["text"]["text"]) <= 3000
    for item in block.get("fields", []):
        assert 0 < len(item["text"]) <= 2000
    assert len(block.get("fields", [])) <= 10


def check_image(block: Mapping[str, Any]) -> None:
    assert block["image_url"].startswith(("https://", "http://"))
    assert len(block["image_url"]) <= 3000
    assert 0 < len(block["alt_text"]) <= 2000
    if "title" in block:
        assert block["title"]["type"] == "plain_text"
        assert len(block["title"]["text"]) <= 2000


def check_context(block: Mapping[str, Any]) -> None:
    assert 1 <= len(block["elements"]) <= 10
    for element in block["elements"]:
        assert len(element["text"]) <= 3000


CHECKS = {"header": check_header, "section": check_section, "image": check_image,
          "context": check_context}


def blocks_of(message: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    return [b for b in message["blocks"] if b["type"] == kind]


def all_text(message: Mapping[str, Any]) -> str:
    return repr(message)


# -- the message -----------------------------------------------------------------------------


def test_completed_message_has_outcome_fields_and_images() -> None:
    message = slack.build_message(make_event())
    check_limits(message)
    [header] = blocks_of(message, "header")
    assert "completed" in header["text"]["text"].lower()
    fields = [f["text"] for f in message["blocks"][1]["fields"]]
    assert fields == [
        "*Source*\nrendergrid",
        "*Model*\nflux-pro",
        "*Job ID*\nc0ea4d5b-0000-4000-8000-000000000001",
        "*Cost*\n0.1",
    ]
    images = blocks_of(message, "image")
    assert [b["image_url"] for b in images] == make_event()["outputs"]
    assert all(b["alt_text"] for b in images)
    assert "Error" not in all_text(message)
    assert "c0ea4d5b-0000-4000-8000-000000000001" in message["text"]
    assert "completed" in message["text"].lower()


def test_failed_message_shows_the_error_and_no_images() -> None:
    message = slack.build_message(failed_event())
    check_limits(message)
    assert "failed" in blocks_of(message, "header")[0]["text"]["text"].lower()
    assert blocks_of(message, "image") == []
    error_sections = [b for b in blocks_of(message, "section")
                      if "NSFW filter rejected the prompt" in b.get("text", {}).get("text", "")]
    assert len(error_sections) == 1
    assert "NSFW filter rejected the prompt" in message["text"]


def test_missing_model_and_cost_show_a_dash() -> None:
    message = slack.build_message(make_event(model=None, cost=None, outputs=[]))
    check_limits(message)
    fields = [f["text"] for f in message["blocks"][1]["fields"]]
    assert "*Model*\n—" in fields and "*Cost*\n—" in fields


def test_many_outputs_cap_image_blocks_and_list_the_rest() -> None:
    outputs = [f"{CDN}/{i}.png" for i in range(80)]
    message = slack.build_message(make_event(outputs=outputs))
    check_limits(message)
    images = blocks_of(message, "image")
    assert len(images) == slack.MAX_IMAGE_BLOCKS
    assert [b["image_url"] for b in images] == outputs[: slack.MAX_IMAGE_BLOCKS]
    links = blocks_of(message, "section")[-1]["text"]["text"]
    assert f"{CDN}/{slack.MAX_IMAGE_BLOCKS}.png" in links
    assert "more" in links  # the tail did not fit one section and is counted instead
    assert "80 outputs" in message["text"]


def test_non_image_outputs_are_links_not_image_blocks() -> None:
    outputs = [f"{CDN}/clip.mp4", f"{CDN}/model.glb", f"{CDN}/pic.webp", "s3://bucket/x.png"]
    message = slack.build_message(make_event(outputs=outputs))
    check_limits(message)
    assert blocks_of(message, "image") == []
    links = blocks_of(message, "section")[-1]["text"]["text"]
    for url in outputs:
        assert f"<{url}|" in links


def test_alt_text_numbers_images_by_their_place_in_outputs() -> None:
    message = slack.build_message(make_event(outputs=[f"{CDN}/v.mp4", f"{CDN}/a.png"]))
    [image] = blocks_of(message, "image")
    assert image["alt_text"] == "Output 2 of 2: a.png"


def test_too_long_image_url_is_not_an_image_block() -> None:
    long_url = f"{CDN}/{'x' * 3000}.png"
    message = slack.build_message(make_event(outputs=[long_url]))
    check_limits(message)
    assert blocks_of(message, "image") == []


def test_long_texts_are_truncated_within_limits() -> None:
    event = failed_event("boom " * 5000)
    event.update(job_id="j" * 5000, model="m" * 5000, source="s" * 300,
                 type="webhook.unrecognized", status=None)
    message = slack.build_message(event)
    check_limits(message)
    error_text = blocks_of(message, "section")[1]["text"]["text"]
    assert error_text.startswith("*Error*\n```boom boom")
    assert "…" in error_text
    assert len(message["text"]) <= slack.FALLBACK_CHARS


def test_user_text_is_escaped_so_it_cannot_ping_or_link() -> None:
    message = slack.build_message(failed_event("<!channel> see <https://evil.example|here> & more"))
    text = all_text(message)
    assert "<!channel>" not in text
    assert "&lt;!channel&gt;" in text and "&amp; more" in text


def test_the_registry_paces_slack_at_one_message_per_second() -> None:
    assert SINK_SPECS["slack"].default_rate_per_s == 1.0


# -- talking to (fake) Slack -----------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


def make_sink(url: str, http: httpx.AsyncClient, timeout_s: float = 5.0) -> slack.SlackSink:
    return slack.create("team", {"url": url}, SinkContext(http=http, timeout_s=timeout_s))


async def send_error(sink: slack.SlackSink) -> SinkError:
    with pytest.raises(SinkError) as caught:
        await sink.send(make_event())
    return caught.value


def assert_no_url(error: SinkError, url: str) -> None:
    path = httpx.URL(url).path
    for text in (str(error), error.message, repr(error.args)):
        assert url not in text
        assert path not in text
        assert "B0000TEST" not in text


async def test_ok_posts_the_block_kit_message(fake_slack: FakeSlack,
                                              http: httpx.AsyncClient) -> None:
    fake_slack.clear()
    sink = make_sink(fake_slack.webhook_url("ok"), http)
    assert await sink.send(make_event()) == 200
    [request] = fake_slack.requests
    assert request.headers["content-type"] == "application/json"
    assert request.json() == slack.build_message(make_event())
    await sink.aclose()


PERMANENT = sorted(set(SLACK_ANSWERS) - {"ok", "rate_limited", "rollup_error"})


@pytest.mark.parametrize("word", PERMANENT)
async def test_slack_error_words_are_permanent(fake_slack: FakeSlack, http: httpx.AsyncClient,
                                               word: str) -> None:
    url = fake_slack.webhook_url(word)
    error = await send_error(make_sink(url, http))
    assert error.permanent
    assert error.status_code == SLACK_ANSWERS[word].status
    assert word in error.message and "the Slack webhook" in error.message
    assert error.retry_after_s is None
    assert_no_url(error, url)


async def test_an_error_word_is_permanent_even_on_a_5xx(fake_slack: FakeSlack,
                                                        http: httpx.AsyncClient) -> None:
    fake_slack.script(Reply(500, "no_service"))
    error = await send_error(make_sink(fake_slack.webhook_url(), http))
    assert error.permanent and error.status_code == 500


async def test_429_is_transient_with_retry_after(fake_slack: FakeSlack,
                                                 http: httpx.AsyncClient) -> None:
    url = fake_slack.webhook_url("rate_limited")
    error = await send_error(make_sink(url, http))
    assert not error.permanent
    assert error.status_code == 429
    assert error.retry_after_s == 7.0
    assert_no_url(error, url)


async def test_429_with_an_http_date_retry_after(fake_slack: FakeSlack,
                                                 http: httpx.AsyncClient) -> None:
    fake_slack.script(Reply(429, "", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    error = await send_error(make_sink(fake_slack.webhook_url(), http))
    assert not error.permanent and error.retry_after_s == 0.0  # a date in the past: now


async def test_rollup_error_is_transient(fake_slack: FakeSlack, http: httpx.AsyncClient) -> None:
    url = fake_slack.webhook_url("rollup_error")
    error = await send_error(make_sink(url, http))
    assert not error.permanent and error.status_code == 500
    assert "rollup_error" in error.message
    assert_no_url(error, url)


@pytest.mark.parametrize(("status", "permanent"), [(502, False), (503, False), (408, False),
                                                   (400, True), (401, True)])
async def test_other_statuses_follow_the_design(fake_slack: FakeSlack, http: httpx.AsyncClient,
                                                status: int, permanent: bool) -> None:
    fake_slack.script(Reply(status, "something else"))
    error = await send_error(make_sink(fake_slack.webhook_url(), http))
    assert error.permanent is permanent and error.status_code == status


async def test_timeout_is_transient_and_hides_the_url(fake_slack: FakeSlack,
                                                      http: httpx.AsyncClient) -> None:
    fake_slack.script(Reply(200, "ok", delay_s=3))
    url = fake_slack.webhook_url()
    error = await send_error(make_sink(url, http, timeout_s=0.2))
    assert not error.permanent and error.status_code is None
    assert "Timeout" in error.message
    assert_no_url(error, url)


async def test_connection_refused_is_transient_and_hides_the_url(
    http: httpx.AsyncClient,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/services/T0000TEST/B0000TEST/secret"
    error = await send_error(make_sink(url, http))
    assert not error.permanent
    assert "ConnectError" in error.message
    assert_no_url(error, url)
