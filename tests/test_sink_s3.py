"""The S3 sink against moto's S3 server, mirroring from a file server on 127.0.0.1."""

from __future__ import annotations

import functools
import ipaddress
import json
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from handlers.sinks import fetch, s3
from handlers.sinks.base import SinkContext, SinkError
from receiver.core.errors import ConfigError
from receiver.settings import SinkSettings
from tests import support
from tests.fakes import JPG_BYTES, PNG_BYTES, FileServer, MotoS3, Reply, free_port

MiB = 1024 * 1024
PREFIX = "hookyard/"
pytestmark = pytest.mark.usefixtures("aws_env")


MakeS3 = Callable[..., s3.S3Sink]


make_event = functools.partial(
    support.make_event,
    id="evt_01JDTESTS3000000000000000",
    outputs=[],
    model="flüx-pro ✨",
    metadata={"team": "ünïcode"},
    raw={"nested": [1, 2, {"x": None}]},
)


def compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def get_object(moto: MotoS3, bucket: str, key: str) -> tuple[bytes, str, str]:
    """(body, content type, ETag) of one object."""
    with moto.client() as client:
        answer = client.get_object(Bucket=bucket, Key=key)
        return answer["Body"].read(), answer["ContentType"], answer["ETag"]


def keys(moto: MotoS3, bucket: str) -> list[str]:
    with moto.client() as client:
        answer = client.list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in answer.get("Contents", []))


def pending_uploads(moto: MotoS3, bucket: str) -> list[Any]:
    with moto.client() as client:
        return list(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


EVENT_KEY = f"{PREFIX}events/2026/11/22/evt_01JDTESTS3000000000000000.json"
OUTPUT_DIR = f"{PREFIX}outputs/rendergrid/c0ea4d5b-0000-4000-8000-000000000001"


# -- the event JSON --------------------------------------------------------------------------


async def test_event_json_lands_at_its_dated_key(make_s3: MakeS3, moto: MotoS3,
                                                 bucket: str) -> None:
    event = make_event()
    assert await make_s3().send(event) == 200
    body, content_type, _ = get_object(moto, bucket, EVENT_KEY)
    assert body == compact(event)
    assert content_type == "application/json"
    assert keys(moto, bucket) == [EVENT_KEY]


async def test_the_date_is_received_at_in_utc(make_s3: MakeS3, moto: MotoS3,
                                              bucket: str) -> None:
    await make_s3(prefix="").send(make_event(received_at="2026-11-23T01:30:00.123+02:00"))
    assert keys(moto, bucket) == ["events/2026/11/22/evt_01JDTESTS3000000000000000.json"]


async def test_a_retry_overwrites_the_same_keys(make_s3: MakeS3, moto: MotoS3, bucket: str,
                                                files: FileServer) -> None:
    event = make_event(outputs=[files.add_png("/retry/a.png"), files.add_jpg("/retry/b.jpg")])
    sink = make_s3(mirror_outputs=True, allow_private_networks=True)
    await sink.send(event)
    first = keys(moto, bucket)
    await sink.send(event)
    await make_s3(mirror_outputs=True, allow_private_networks=True).send(event)  # a replay
    assert keys(moto, bucket) == first and len(first) == 3


async def test_missing_bucket_is_permanent(make_s3: MakeS3) -> None:
    with pytest.raises(SinkError) as caught:
        await make_s3(bucket="no-such-bucket-here").send(make_event())
    assert caught.value.permanent
    assert caught.value.status_code == 404
    assert "NoSuchBucket" in caught.value.message


async def test_unreachable_endpoint_is_transient(make_s3: MakeS3) -> None:
    sink = make_s3(endpoint_url=f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
    with pytest.raises(SinkError) as caught:
        await sink.send(make_event())
    assert not caught.value.permanent
    assert "EndpointConnectionError" in caught.value.message


async def test_bad_received_at_is_permanent(make_s3: MakeS3) -> None:
    with pytest.raises(SinkError) as caught:
        await make_s3().send(make_event(received_at="yesterday"))
    assert caught.value.permanent


# -- mirroring -------------------------------------------------------------------------------


async def test_mirror_copies_outputs_byte_for_byte(make_s3: MakeS3, moto: MotoS3,
                                                   bucket: str, files: FileServer) -> None:
    outputs = [
        files.add_png("/m/first.png"),
        files.add_jpg("/m/second"),  # no suffix: the content type decides
        files.add("/m/third.webp", b"RIFF-webp-ish", "application/octet-stream"),
        files.add("/m/fourth", b"\x00\x01\x02", "application/octet-stream"),
    ]
    event = make_event(outputs=outputs)
    await make_s3(mirror_outputs=True, allow_private_networks=True).send(event)
    expected = {
        f"{OUTPUT_DIR}/0.png": (PNG_BYTES, "image/png"),
        f"{OUTPUT_DIR}/1.jpg": (JPG_BYTES, "image/jpeg"),
        f"{OUTPUT_DIR}/2.webp": (b"RIFF-webp-ish", "application/octet-stream"),
        f"{OUTPUT_DIR}/3.bin": (b"\x00\x01\x02", "application/octet-stream"),
    }
    for key, (data, content_type) in expected.items():
        assert get_object(moto, bucket, key)[:2] == (data, content_type)
    body, _, _ = get_object(moto, bucket, EVENT_KEY)
    assert body == compact({**event, "mirrored_outputs": list(expected)})
    assert keys(moto, bucket) == sorted([*expected, EVENT_KEY])


async def test_a_failed_mirror_keeps_the_event_json_without_mirrored_outputs(
    make_s3: MakeS3, moto: MotoS3, bucket: str, files: FileServer
) -> None:
    outputs = [files.add_png("/gone/ok.png"), f"{files.url}/gone/missing.png"]
    event = make_event(outputs=outputs)
    with pytest.raises(SinkError) as caught:
        await make_s3(mirror_outputs=True, allow_private_networks=True).send(event)
    assert caught.value.permanent and caught.value.status_code == 404
    assert get_object(moto, bucket, EVENT_KEY)[0] == compact(event)  # no mirrored_outputs
    assert keys(moto, bucket) == [EVENT_KEY, f"{OUTPUT_DIR}/0.png"]


@pytest.mark.parametrize(("status", "permanent"), [(404, True), (410, True), (403, True),
                                                   (500, False), (503, False), (429, False)])
async def test_output_host_statuses(make_s3: MakeS3, files: FileServer, status: int,
                                    permanent: bool) -> None:
    url = files.route(f"/status/{status}.png", Reply(status, "nope"))
    with pytest.raises(SinkError) as caught:
        await make_s3(mirror_outputs=True, allow_private_networks=True).send(
            make_event(outputs=[url])
        )
    assert caught.value.permanent is permanent
    assert caught.value.status_code == status


async def test_output_timeout_is_transient(make_s3: MakeS3, files: FileServer) -> None:
    url = files.route("/slow.png", Reply(200, PNG_BYTES, delay_s=3, content_type="image/png"))
    sink = make_s3(mirror_outputs=True, allow_private_networks=True, output_timeout_s=0.3)
    with pytest.raises(SinkError) as caught:
        await sink.send(make_event(outputs=[url]))
    assert not caught.value.permanent
    assert "timeout" in caught.value.message.lower()


async def test_redirects_are_followed(make_s3: MakeS3, moto: MotoS3, bucket: str,
                                      files: FileServer) -> None:
    target = files.add_png("/redirect/target.png")
    url = files.route("/redirect/start", Reply(302, "", {"Location": "/redirect/target.png"}))
    await make_s3(mirror_outputs=True, allow_private_networks=True).send(
        make_event(outputs=[url])
    )
    assert target
    assert get_object(moto, bucket, f"{OUTPUT_DIR}/0.png")[:2] == (PNG_BYTES, "image/png")


async def test_a_redirect_loop_is_permanent(make_s3: MakeS3, files: FileServer) -> None:
    url = files.route("/loop", Reply(302, "", {"Location": "/loop"}))
    with pytest.raises(SinkError) as caught:
        await make_s3(mirror_outputs=True, allow_private_networks=True).send(
            make_event(outputs=[url])
        )
    assert caught.value.permanent and "redirects" in caught.value.message


# -- what may be fetched ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "10.1.2.3", "192.168.1.1", "172.16.0.1", "169.254.169.254", "[::1]",
     "[fe80::1]", "[fd00::1]", "0.0.0.0", "224.0.0.1", "240.0.0.1", "100.64.0.1",  # noqa: S104 (refused, never bound)
     "[::ffff:127.0.0.1]", "localhost"],
)
async def test_private_addresses_are_refused(make_s3: MakeS3, moto: MotoS3, bucket: str,
                                             files: FileServer, host: str) -> None:
    files.clear()
    url = files.add_png("/private.png").replace("127.0.0.1", host)
    with pytest.raises(SinkError) as caught:
        await make_s3(mirror_outputs=True).send(make_event(outputs=[url]))
    assert caught.value.permanent
    assert "non-public" in caught.value.message
    assert files.requests == []
    assert keys(moto, bucket) == [EVENT_KEY]  # archived; no output


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://example.com/",
            "not a url", "http:///nohost.png", "//example.com/a.png"],
)
async def test_non_http_urls_are_refused(make_s3: MakeS3, moto: MotoS3, bucket: str,
                                         url: str) -> None:
    with pytest.raises(SinkError) as caught:
        await make_s3(mirror_outputs=True, allow_private_networks=True).send(
            make_event(outputs=[url])
        )
    assert caught.value.permanent
    assert keys(moto, bucket) == [EVENT_KEY]  # archived; no output


async def test_every_resolved_address_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    async def two_answers(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.7")]

    monkeypatch.setattr(fetch, "resolve", two_answers)
    with pytest.raises(SinkError) as caught:
        await fetch.check_target(httpx.URL("https://cdn.example.com/a.png"), allow_private=False)
    assert caught.value.permanent and "10.0.0.7" in caught.value.message


async def test_the_connection_is_pinned_to_the_checked_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def public(host: str, port: int) -> list[Any]:
        assert (host, port) == ("cdn.example.com", 8443)
        return [ipaddress.ip_address("93.184.216.34")]

    monkeypatch.setattr(fetch, "resolve", public)
    target = await fetch.check_target(httpx.URL("https://cdn.example.com:8443/a.png?x=1"), False)
    assert str(target.connect_url) == "https://93.184.216.34:8443/a.png?x=1"
    assert target.headers == {"Host": "cdn.example.com:8443"}
    assert target.extensions == {"sni_hostname": "cdn.example.com"}


# -- size cap and multipart ------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
async def test_over_the_cap_is_permanent_and_leaves_nothing(
    make_s3: MakeS3, moto: MotoS3, bucket: str, files: FileServer, chunked: bool
) -> None:
    url = files.add(f"/cap/{chunked}.png", b"x" * (2 * MiB), "image/png", chunked=chunked)
    sink = make_s3(mirror_outputs=True, allow_private_networks=True, max_output_bytes=MiB)
    with pytest.raises(SinkError) as caught:
        await sink.send(make_event(outputs=[url]))
    assert caught.value.permanent and "max_output_bytes" in caught.value.message
    assert keys(moto, bucket) == [EVENT_KEY]  # archived; no output


async def test_over_the_cap_during_multipart_aborts_the_upload(
    make_s3: MakeS3, moto: MotoS3, bucket: str, files: FileServer
) -> None:
    url = files.add("/cap/big.bin", os.urandom(18 * MiB), "image/png", chunked=True)
    sink = make_s3(mirror_outputs=True, allow_private_networks=True,
                     max_output_bytes=17 * MiB)
    with pytest.raises(SinkError) as caught:
        await sink.send(make_event(outputs=[url]))
    assert caught.value.permanent
    assert keys(moto, bucket) == [EVENT_KEY]  # archived; no output
    assert pending_uploads(moto, bucket) == []


async def test_a_large_output_goes_through_multipart(make_s3: MakeS3, moto: MotoS3,
                                                     bucket: str, files: FileServer) -> None:
    data = os.urandom(2 * s3.PART_BYTES + 12345)
    url = files.add("/large/render.png", data, "image/png", chunked=True)
    await make_s3(mirror_outputs=True, allow_private_networks=True).send(
        make_event(outputs=[url])
    )
    body, content_type, etag = get_object(moto, bucket, f"{OUTPUT_DIR}/0.png")
    assert body == data
    assert content_type == "image/png"
    assert etag.strip('"').endswith("-3")  # a multipart ETag: three parts
    assert pending_uploads(moto, bucket) == []


async def test_exactly_one_part_is_a_single_put(make_s3: MakeS3, moto: MotoS3, bucket: str,
                                                files: FileServer) -> None:
    data = os.urandom(s3.PART_BYTES)
    url = files.add("/large/exact.png", data, "image/png")
    await make_s3(mirror_outputs=True, allow_private_networks=True).send(
        make_event(outputs=[url])
    )
    body, _, etag = get_object(moto, bucket, f"{OUTPUT_DIR}/0.png")
    assert body == data and "-" not in etag


# -- keys, options and set-up ----------------------------------------------------------------


def test_job_ids_are_made_key_safe() -> None:
    key = s3.output_key("p/", make_event(job_id="../a b/ç"), 0, "png")
    segment = key.split("/")[3]
    assert key.startswith("p/outputs/rendergrid/") and key.endswith("/0.png")
    assert ".." not in key and " " not in key
    assert segment != s3.output_key("p/", make_event(job_id="../a b/c"), 0, "png").split("/")[3]
    assert s3.key_safe("plain-id_1.2") == "plain-id_1.2"


@pytest.mark.parametrize(
    ("content_type", "url", "ext"),
    [("image/png", "https://x/a", "png"), ("image/jpeg; charset=binary", "https://x/a.png", "jpg"),
     ("image/webp", "https://x/a", "webp"), ("image/gif", "https://x/a", "gif"),
     ("application/octet-stream", "https://x/a.JPEG", "jpg"), (None, "https://x/a.mp4?s=1", "mp4"),
     ("text/plain", "https://x/a", "bin"), (None, "https://x/a.%2F..", "bin")],
)
def test_extension(content_type: str | None, url: str, ext: str) -> None:
    assert s3.extension(content_type, url) == ext


def test_create_without_the_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch,
                                                      http: httpx.AsyncClient) -> None:
    monkeypatch.setattr(s3, "get_session", None)
    settings = SinkSettings(name="archive", type="s3", options={"bucket": "b"})
    with pytest.raises(ConfigError, match=r"pip install 'hookyard\[s3\]'"):
        s3.create(settings.name, settings.options, SinkContext(http=http, timeout_s=1))


@pytest.mark.parametrize(("key", "value"), [("mirror_outputs", "yes"), ("max_output_bytes", 0),
                                            ("max_output_bytes", True), ("prefix", 3)])
def test_bad_option_types_are_config_errors(key: str, value: Any) -> None:
    """Checked once, by the spec (at load, for `check` and `serve` alike), not by create."""
    problems = s3.SPEC.check({"bucket": "b", key: value})
    assert len(problems) == 1 and problems[0].startswith(key)


async def test_a_malformed_endpoint_url_is_permanent(make_s3: MakeS3) -> None:
    with pytest.raises(SinkError) as caught:
        await make_s3(endpoint_url="not a url").send(make_event())
    assert caught.value.permanent and "S3 client" in caught.value.message
