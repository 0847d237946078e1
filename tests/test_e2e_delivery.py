"""Fan-out end to end: a real `hookyard serve`, real sink servers on 127.0.0.1, moto's S3."""

from __future__ import annotations

import json
import time
from pathlib import Path

import standardwebhooks

from tests.fakes import PNG_BYTES, FakeSink, FakeSlack, FileServer, MotoS3, Reply
from tests.support import (
    RENDERGRID_SECRET,
    Server,
    delivery_counts,
    post_signed,
    wait_for,
)
from tests.support import deliveries as store_deliveries

HTTP_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}

HEAD = """
[server]
database = "sqlite:///{tmp}/hookyard.db"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["{secret}"]
"""


def write(tmp: Path, sinks: str, routes: list[str]) -> Path:
    route_text = "".join(
        f'\n[[routes]]\nsources = ["*"]\ntypes = ["*"]\nsinks = ["{name}"]\n' for name in routes)
    path = tmp / "hookyard.toml"
    path.write_text(HEAD.format(tmp=tmp, secret=RENDERGRID_SECRET) + sinks + route_text)
    return path


def creation(job: str, outputs: list[str] | None = None) -> bytes:
    return json.dumps({"event": "creation.completed", "id": job, "status": "completed",
                       "result_urls": outputs or [], "cost": 0.1}).encode()


def post(server: Server, config: Path, body: bytes) -> str:
    r = post_signed(server.url, config, body)
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


def deliveries(tmp: Path) -> dict[tuple[str, str], int]:
    return delivery_counts(tmp / "hookyard.db")


def test_one_webhook_reaches_every_routed_sink_in_its_shape(tmp_path: Path, sink: FakeSink) -> None:
    with FakeSlack() as slack, FileServer() as files, MotoS3() as s3:
        image = files.add_png("/out/0.png")
        with s3.client() as client:
            client.create_bucket(Bucket="renders")
        config = write(tmp_path, f"""
[sinks.backend]
type = "http"
url = "{sink.url}/events"
secret = "{HTTP_SECRET}"
headers = {{ "X-Team" = "render" }}

[sinks.team]
type = "slack"
url = "{slack.webhook_url("ok")}"

[sinks.archive]
type = "s3"
bucket = "renders"
prefix = "hy/"
endpoint_url = "{s3.endpoint_url}"
mirror_outputs = true
allow_private_networks = true

[sinks.log]
type = "jsonl"
path = "{tmp_path}/events.jsonl"
""", ["backend", "team", "archive", "log"])
        server = Server(config, tmp_path, env=AWS_ENV).start()
        try:
            event_id = post(server, config, creation("job-1", [image]))
            wait_for(lambda: sum(n for (_, st), n in deliveries(tmp_path).items()
                                 if st == "delivered") == 4)
        finally:
            server.kill()
        [request] = sink.requests
        event = request.json()
        assert event["id"] == event_id and event["outputs"] == [image]
        assert event["raw"]["id"] == "job-1" and request.headers["x-team"] == "render"
        # An independent Standard Webhooks implementation (the spec's own library) verifies it.
        standardwebhooks.Webhook(HTTP_SECRET).verify(request.body, dict(request.headers))
        assert request.headers["webhook-id"] == event_id
        [message] = slack.messages
        assert image in json.dumps(message["blocks"]) and "job-1" in message["text"]
        day = time.strftime("%Y/%m/%d", time.gmtime())
        with s3.client() as client:
            stored = client.get_object(Bucket="renders", Key=f"hy/events/{day}/{event_id}.json")
            mirrored = client.get_object(Bucket="renders", Key="hy/outputs/rendergrid/job-1/0.png")
            assert json.loads(stored["Body"].read())["id"] == event_id
            assert mirrored["Body"].read() == PNG_BYTES
            assert mirrored["ContentType"] == "image/png"
        [line] = (tmp_path / "events.jsonl").read_text().splitlines()
        assert json.loads(line)["id"] == event_id


def http_sink(name: str, url: str, extra: str = "") -> str:
    return f'\n[sinks.{name}]\ntype = "http"\nurl = "{url}"\n{extra}\n'


def test_500_twice_then_delivered_on_the_third_attempt_and_no_more(tmp_path: Path,
                                                                   sink: FakeSink) -> None:
    sink.script(Reply(500), Reply(500))
    config = write(tmp_path, http_sink("backend", sink.url, "retry_schedule_s = [0.2, 0.2]"),
                   ["backend"])
    server = Server(config, tmp_path).start()
    try:
        event_id = post(server, config, creation("job-2"))
        wait_for(lambda: deliveries(tmp_path) == {("backend", "delivered"): 1})
        # A marker that walks the same schedule: once it is delivered, a stray resend of the
        # first event would have had as long to arrive.
        sink.script(Reply(500), Reply(500))
        marker = post(server, config, creation("job-marker"))
        wait_for(lambda: deliveries(tmp_path) == {("backend", "delivered"): 2}, what="marker")
    finally:
        server.kill()
    sent = [r.headers["webhook-id"] for r in sink.requests]
    assert sent.count(event_id) == 3
    assert set(sent) == {event_id, marker} and sent.count(marker) == 3


def test_400_is_tried_once_and_the_delivery_is_dead(tmp_path: Path, sink: FakeSink) -> None:
    sink.script(Reply(400, "bad event"))
    config = write(tmp_path, http_sink("backend", sink.url, "retry_schedule_s = [0.1]"),
                   ["backend"])
    server = Server(config, tmp_path).start()
    try:
        event_id = post(server, config, creation("job-3"))
        wait_for(lambda: deliveries(tmp_path) == {("backend", "dead"): 1})
        # A marker that fails once, waits out the schedule and dies: a retry of the first
        # event would have had as long to arrive.
        sink.script(Reply(500), Reply(400, "bad marker"))
        marker = post(server, config, creation("job-marker"))
        wait_for(lambda: deliveries(tmp_path) == {("backend", "dead"): 2}, what="marker")
    finally:
        server.kill()
    sent = [r.headers["webhook-id"] for r in sink.requests]
    assert sent.count(event_id) == 1 and sent.count(marker) == 2
    [first, _] = store_deliveries(tmp_path / "hookyard.db")
    assert first["event_id"] == event_id
    assert first["last_status_code"] == 400 and "bad event" in first["last_error"]


def test_a_hanging_sink_does_not_slow_the_others(tmp_path: Path, sink: FakeSink) -> None:
    with FakeSink(default=Reply(200, delay_s=60)) as slow:
        config = write(tmp_path, http_sink("slow", slow.url, "timeout_s = 30")
                       + http_sink("fast", sink.url), ["slow", "fast"])
        server = Server(config, tmp_path).start()
        try:
            for i in range(20):
                post(server, config, creation(f"job-h{i}"))
            wait_for(lambda: deliveries(tmp_path).get(("fast", "delivered")) == 20, timeout=10)
            counts = deliveries(tmp_path)
        finally:
            server.kill()
    assert counts[("slow", "pending")] == 20  # still hanging: none finished, none lost
    assert len(sink.requests) == 20


def test_a_sink_that_does_not_answer_within_timeout_s_fails_the_attempt_and_is_retried(
        tmp_path: Path) -> None:
    """The send's deadline (the engine's, around every send) ends a POST that gets no answer;
    the attempt is a failure worth a retry, saying so."""
    with FakeSink(default=Reply(200, delay_s=30)) as silent:
        config = write(tmp_path, http_sink("silent", silent.url,
                                           "timeout_s = 1\nretry_schedule_s = [60]"), ["silent"])
        server = Server(config, tmp_path).start()
        try:
            started = time.monotonic()
            post(server, config, creation("job-silent"))
            wait_for(lambda: (store_deliveries(tmp_path / "hookyard.db") or [{}])[0]
                     .get("attempts") == 1, timeout=15)
            took = time.monotonic() - started
            [row] = store_deliveries(tmp_path / "hookyard.db")
        finally:
            server.kill()
    assert row["status"] == "pending" and "timeout_s = 1" in row["last_error"]
    assert len(silent.requests) == 1 and took < 10  # ended by the deadline, not by the sink


def test_sigkill_between_ack_and_delivery_still_delivers_after_restart(tmp_path: Path) -> None:
    with FakeSink(default=Reply(200, delay_s=60)) as hanging:
        config = write(tmp_path, http_sink("backend", f"{hanging.url}/x",
                                           "timeout_s = 30\nconcurrency = 10"),
                       ["backend"])
        server = Server(config, tmp_path).start()
        try:
            acked = [post(server, config, creation(f"job-k{i}")) for i in range(5)]
            wait_for(lambda: len(hanging.requests) == 5)  # all in flight, none answered
        finally:
            server.kill()
    assert deliveries(tmp_path) == {("backend", "pending"): 5}
    with FakeSink() as healthy:
        config = write(tmp_path, http_sink("backend", f"{healthy.url}/x"), ["backend"])
        server = Server(config, tmp_path).start()
        try:
            wait_for(lambda: deliveries(tmp_path) == {("backend", "delivered"): 5})
        finally:
            server.kill()
        assert sorted(r.headers["webhook-id"] for r in healthy.requests) == sorted(acked)
