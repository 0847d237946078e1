"""Durable outputs (issue 13, part 2): a sink with `outputs_from` sends mirrored copies.

End to end: a real `hookyard serve` (SQLite and PostgreSQL), moto's S3 server, an image server
whose URLs stop working after the first download (as provider links expire), and a backend
that receives the events and downloads what they link to.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.sinks import s3
from handlers.sinks.base import SinkContext
from receiver import settings as settings_mod
from receiver.core import events
from receiver.core.errors import ConfigError
from receiver.core.outputs import MirroredOutput, with_mirrors
from receiver.store import NewEvent, Outcome, Store
from tests.fakes import PNG_BYTES, FakeSink, MotoS3, Recorded, Reply
from tests.pg import pg_empty, pg_url  # noqa: F401  (fixtures)
from tests.support import RENDERGRID_SECRET, Server, signed_headers
from tests.test_store_backends import Factory, backend, make_store  # noqa: F401  (fixtures)

TOKEN = "admin-token-0123456789"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": MotoS3.ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": MotoS3.SECRET_KEY,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


# -- the event a waiting sink sends ---------------------------------------------------------


def test_complete_mirrors_replace_the_outputs_and_keep_the_originals() -> None:
    event = {"id": "evt_1", "outputs": ["https://p/a.png", "https://p/b.png"]}
    sent = with_mirrors(event, ["https://s3/a", "https://s3/b"])
    assert sent["outputs"] == ["https://s3/a", "https://s3/b"]
    assert sent["provider_outputs"] == event["outputs"]
    assert "mirror_failed" not in sent
    assert event["outputs"] == ["https://p/a.png", "https://p/b.png"]  # not changed in place


@given(outputs=st.lists(st.text(min_size=1), min_size=1, max_size=4), data=st.data())
def test_anything_short_of_every_output_sends_the_originals_flagged(
    outputs: list[str], data: st.DataObject
) -> None:
    links = data.draw(st.lists(st.one_of(st.none(), st.text()), max_size=len(outputs)))
    if len(links) == len(outputs) and None not in links:
        links[0] = None
    sent = with_mirrors({"outputs": outputs}, links)
    assert sent["outputs"] == outputs and sent["mirror_failed"] is True
    assert "provider_outputs" not in sent


def test_an_event_without_outputs_goes_unchanged() -> None:
    event = {"id": "evt_1", "outputs": [], "status": "failed"}
    assert with_mirrors(event, []) == event


# -- configuration --------------------------------------------------------------------------

SINKS = """
[sinks.archive]
type = "s3"
bucket = "renders"
mirror_outputs = {mirror}
{archive_extra}

[sinks.backend]
type = "http"
url = "http://127.0.0.1:9/hook"
outputs_from = "{source}"

[sinks.log]
type = "jsonl"
path = "{tmp}/e.jsonl"
"""


def load_with(tmp: Path, routes: str, *, mirror: str = "true", source: str = "archive",
              archive_extra: str = "") -> settings_mod.Settings:
    path = tmp / "h.toml"
    path.write_text(
        f'[server]\ndatabase = "sqlite:///{tmp}/h.db"\n'
        f'[sources.rendergrid]\nprovider = "rendergrid"\nsecrets = ["{RENDERGRID_SECRET}"]\n'
        + SINKS.format(mirror=mirror, source=source, tmp=tmp, archive_extra=archive_extra)
        + routes
    )
    return settings_mod.load(str(path))


def route(sinks: list[str], sources: str = '["*"]', types: str = '["*"]') -> str:
    return f"\n[[routes]]\nsources = {sources}\ntypes = {types}\nsinks = {json.dumps(sinks)}\n"


def test_outputs_from_an_s3_mirror_routed_the_same_events_loads(tmp_path: Path) -> None:
    config = load_with(
        tmp_path,
        route(["archive"]) + route(["backend"], '["rendergrid"]', '["generation.completed"]'),
    )
    assert config.sinks["backend"].outputs_from == "archive"


@pytest.mark.parametrize(
    ("routes", "options", "message"),
    [
        (route(["archive", "backend"]), {"source": "nowhere"}, 'another sink of type "s3"'),
        (route(["log", "backend"]), {"source": "log"}, 'another sink of type "s3"'),
        (route(["archive", "backend"]), {"source": "backend"}, 'another sink of type "s3"'),
        (route(["archive", "backend"]), {"mirror": "false"}, "set mirror_outputs = true"),
        (route(["backend"]) + route(["archive"], '["rendergrid"]'), {},
         'no route sends these sources and types to "archive"'),
        (route(["backend"], types='["generation.failed"]')
         + route(["archive"], types='["generation.completed"]'), {},
         'add "archive" to this route'),
        (route(["archive", "backend"]), {"archive_extra": 'public_base_url = "cdn.example"'},
         "public_base_url must be an http:// or https:// URL"),
        (route(["archive", "backend"]), {"archive_extra": "presign_expiry_s = 604801"},
         "presign_expiry_s must be at least 1 and at most 604800"),
    ],
)
def test_outputs_from_that_could_send_dying_links_is_refused(
    tmp_path: Path, routes: str, options: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_with(tmp_path, routes, **options)


# -- the store: claims wait for the mirror, mirrors are recorded ------------------------------


@pytest.fixture
async def store(make_store: Factory) -> Store:  # noqa: F811
    return await make_store()


def completed(job: str) -> NewEvent:
    ev = events.generation_event(
        source="rg", provider="rendergrid", job_id=job, status="completed", via="webhook",
        raw={"id": job}, outputs=["https://cdn.example/a.png", "https://cdn.example/b.png"],
    )
    return NewEvent(ev, b"{}", {}, ("archive", "backend"))


async def send_all(store: Store, sink: str, status: str, mirrored: int = 0) -> list[str]:
    now = time.time()
    due = await store.claim_due(sink, now + 1, 100)
    await store.record_outcomes([
        Outcome(d.delivery_id, sink, status, 1, now, now, 0.01, 200, None, tuple(
            MirroredOutput(i, "renders", f"out/{d.event['id']}/{i}.png", "image/png")
            for i in range(mirrored)))
        for d in due
    ])
    return [d.event["id"] for d in due]


async def test_a_waiting_sink_claims_an_event_only_once_its_mirror_settled(store: Store) -> None:
    [one] = await store.write_events([completed("one")])
    [two] = await store.write_events([completed("two")])
    assert await store.claim_due("backend", time.time() + 1, 10, waiting_for="archive") == []
    assert await store.next_due_at("backend", waiting_for="archive") is None
    assert await store.next_due_at("backend") is not None  # without waiting: due now

    # The mirror of `one` is delivered, of `two` dead: both may go now, and only they.
    now = time.time()
    due = await store.claim_due("archive", now + 1, 10)
    await store.record_outcomes([
        Outcome(d.delivery_id, "archive", "delivered" if d.event["id"] == one.event_id
                else "dead", 1, now, now, 0.01, 200, None,
                (MirroredOutput(0, "renders", "k/0.png", "image/png"),
                 MirroredOutput(1, "renders", "k/1.jpg", "image/jpeg"))
                if d.event["id"] == one.event_id else ())
        for d in due
    ])
    assert await store.next_due_at("backend", waiting_for="archive") is not None
    claimed = await store.claim_due("backend", time.time() + 1, 10, waiting_for="archive")
    assert {d.event["id"] for d in claimed} == {one.event_id, two.event_id}
    mirrors = await store.mirrors_of([one.event_id, two.event_id], "archive")
    assert mirrors == {one.event_id: [MirroredOutput(0, "renders", "k/0.png", "image/png"),
                                      MirroredOutput(1, "renders", "k/1.jpg", "image/jpeg")]}
    shown = await store.get_event(one.event_id)
    assert shown is not None and [(m["index"], m["key"], m["sink"]) for m in shown["mirrors"]] == [
        (0, "k/0.png", "archive"), (1, "k/1.jpg", "archive")]


async def test_a_replayed_mirror_makes_its_waiting_sink_wait_again(store: Store) -> None:
    [one] = await store.write_events([completed("one")])
    await send_all(store, "archive", "delivered", mirrored=2)
    await send_all(store, "backend", "delivered")
    await store.add_replays([(one.event_id, "archive"), (one.event_id, "backend")], time.time())
    assert await store.claim_due("backend", time.time() + 1, 10, waiting_for="archive") == []
    await send_all(store, "archive", "delivered", mirrored=2)  # mirrored again: same keys
    assert [d.event["id"] for d in await store.claim_due(
        "backend", time.time() + 1, 10, waiting_for="archive")] == [one.event_id]
    assert len((await store.mirrors_of([one.event_id], "archive"))[one.event_id]) == 2


# -- the s3 sink's links ----------------------------------------------------------------------


async def test_public_base_url_links_are_the_base_plus_the_key() -> None:
    async with httpx.AsyncClient() as http:
        sink = s3.create("archive", {"bucket": "b", "public_base_url": "https://cdn.example/r/"},
                         SinkContext(http, 5.0))
        assert await sink.link("b", "outputs/rg/job 1/0.png") == (
            "https://cdn.example/r/outputs/rg/job%201/0.png")
        await sink.aclose()


@pytest.mark.parametrize(
    ("options", "expires"),
    [({}, "604800"), ({"presign_expiry_s": 3600}, "3600"),
     ({"endpoint_url": "https://acct.r2.example", "presign_expiry_s": 60}, "60")],
)
async def test_other_links_are_sigv4_presigned_for_presign_expiry_s(
    aws_env: None, options: dict[str, Any], expires: str
) -> None:
    """SigV4, whatever the region (botocore presigns with SigV2 unless told otherwise, which
    buckets created since 2020, newer regions and R2 refuse), valid 7 days unless set."""
    async with httpx.AsyncClient() as http:
        sink = s3.create("archive", {"bucket": "renders", **options}, SinkContext(http, 5.0))
        link = await sink.link("renders", "outputs/rg/job/0.png")
        await sink.aclose()
    query = parse_qs(urlsplit(link).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"], link
    assert query["X-Amz-Expires"] == [expires]


# -- end to end -------------------------------------------------------------------------------


class ExpiringImages(FakeSink):
    """Serves each image once: after the first download its URL answers 404, the way provider
    output links die (Replicate deletes outputs after an hour)."""

    def __init__(self) -> None:
        super().__init__(default=Reply(404, "expired"))
        self.served: set[str] = set()
        self.dead: set[str] = set()
        self._gate = threading.Lock()

    def image(self, path: str, *, dead: bool = False) -> str:
        if dead:
            self.dead.add(path)
        return self.url + path

    def answer(self, request: Recorded) -> Reply:
        with self._gate:
            if request.path in self.dead or request.path in self.served:
                return Reply(404, "expired")
            if request.method == "GET":
                self.served.add(request.path)
            return Reply(200, PNG_BYTES, content_type="image/png")


@pytest.fixture
def images() -> Iterator[ExpiringImages]:
    with ExpiringImages() as server:
        yield server


def e2e_config(tmp: Path, database: str, moto: MotoS3, receiver: FakeSink) -> Path:
    bucket = f"renders-{uuid.uuid4().hex[:8]}"
    with moto.client() as client:
        client.create_bucket(Bucket=bucket)
    path = tmp / "hookyard.toml"
    path.write_text(f"""
[server]
database = "{database}"
admin_token = "{TOKEN}"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["{RENDERGRID_SECRET}"]

[sinks.archive]
type = "s3"
bucket = "{bucket}"
endpoint_url = "{moto.endpoint_url}"
mirror_outputs = true
allow_private_networks = true
presign_expiry_s = 3600

[sinks.backend]
type = "http"
url = "{receiver.url}/render-events"
outputs_from = "archive"

[[routes]]
sources = ["*"]
types = ["generation.completed"]
sinks = ["archive", "backend"]
""")
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_empty"))
    return f"sqlite:///{tmp_path}/hookyard.db"


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def post_completed(server: Server, config: Path, job: str, outputs: list[str]) -> str:
    body = json.dumps({"event": "creation.completed", "id": job, "status": "completed",
                       "result_urls": outputs, "cost": 0.1}).encode()
    settings = settings_mod.load(str(config))
    answer = httpx.post(f"{server.url}/hooks/rendergrid", content=body,
                        headers=signed_headers(settings, "rendergrid", body))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["event_id"])


def received(receiver: FakeSink) -> list[dict[str, Any]]:
    return [r.json() for r in receiver.requests if r.method == "POST"]


def test_the_backend_gets_working_links_to_identical_bytes_then_and_on_replay(
    tmp_path: Path, database: str, moto: MotoS3, images: ExpiringImages, sink: FakeSink
) -> None:
    config = e2e_config(tmp_path, database, moto, sink)
    originals = [images.image("/out/a.png"), images.image("/out/b.png")]
    server = Server(config, tmp_path, env=AWS_ENV).start()
    try:
        event_id = post_completed(server, config, "job-durable", originals)
        [first] = wait_for(lambda: received(sink))
        assert first["id"] == event_id
        assert first["provider_outputs"] == originals and "mirror_failed" not in first
        assert all(httpx.get(url).status_code == 404 for url in originals)  # expired
        for link in first["outputs"]:
            assert link not in originals
            assert httpx.get(link).content == PNG_BYTES

        auth = {"Authorization": f"Bearer {TOKEN}"}
        shown = httpx.get(f"{server.url}/v1/events/{event_id}", headers=auth).json()
        assert [(m["sink"], m["index"], m["content_type"]) for m in shown["mirrors"]] == [
            ("archive", 0, "image/png"), ("archive", 1, "image/png")]
        assert all(m["key"].endswith(f"/{m['index']}.png") for m in shown["mirrors"])

        # Days later the provider's links are long dead; a replay sends fresh links (signed
        # at the send: a later second than the first ones).
        signed_at = parse_qs(urlsplit(first["outputs"][0]).query)["X-Amz-Date"][0]
        wait_for(lambda: time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) > signed_at)
        replay = httpx.post(f"{server.url}/v1/events/{event_id}/replay", headers=auth,
                            json={"sinks": ["backend"]})
        assert replay.status_code == 202, replay.text
        _, again = wait_for(lambda: received(sink)[1:] and received(sink))
        assert again["id"] == event_id and again["provider_outputs"] == originals
        assert again["outputs"] != first["outputs"]  # presigned afresh, not stored links
        for link in again["outputs"]:
            assert parse_qs(urlsplit(link).query)["X-Amz-Expires"] == ["3600"]
            assert httpx.get(link).content == PNG_BYTES
    finally:
        server.stop()


def test_a_dead_mirror_sends_the_originals_saying_so(
    tmp_path: Path, database: str, moto: MotoS3, images: ExpiringImages, sink: FakeSink
) -> None:
    """Nothing waits forever: an output that cannot be mirrored (gone already: 404, a
    permanent failure) makes the mirror dead and the backend gets what there is."""
    config = e2e_config(tmp_path, database, moto, sink)
    gone = images.image("/out/gone.png", dead=True)
    server = Server(config, tmp_path, env=AWS_ENV).start()
    try:
        event_id = post_completed(server, config, "job-dead-mirror", [gone])
        [sent] = wait_for(lambda: received(sink))
        assert sent["id"] == event_id
        assert sent["outputs"] == [gone] and sent["mirror_failed"] is True
        assert "provider_outputs" not in sent
    finally:
        server.stop()
