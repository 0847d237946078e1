"""Each sink type's SPEC: its checks, its description, its secrets; and `check` agreeing with
`serve` — a config `hookyard check` accepts builds sinks that deliver, one it refuses `serve`
refuses with the same words (a property over random option tables for every type)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from handlers.sinks import COMMON_KEYS, SINK_SPECS, s3
from receiver import cli
from receiver import settings as settings_mod
from receiver.core.outputs import status_of
from receiver.delivery import close_context, sink_context
from receiver.settings import SinkSettings
from tests.fakes import FakeSink, FakeSlack, MotoS3
from tests.support import WHSEC

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "hunter2-pass"
TOKEN = "tok-0123456789"
SLACK_URL = "https://hooks.slack.com/services/T0001/B0002/Zx9SecretToken"
BUCKET = "specs-bucket"
EVENT: dict[str, Any] = {
    "id": "evt_01JDSPECS00000000000000000",
    "type": "generation.completed",
    "source": "rendergrid",
    "job_id": "job-1",
    "status": "completed",
    "outputs": [],
    "received_at": "2026-11-30T00:00:00+00:00",
    "raw": {},
}


# ---------------------------------------------------------------- the registry


def test_the_registry_lists_every_type_by_its_own_name() -> None:
    assert set(SINK_SPECS) == {"http", "slack", "s3", "jsonl"}
    for name, spec in SINK_SPECS.items():
        assert spec.type == name
        assert not spec.keys & COMMON_KEYS, "a type's own key shadows a common one"


def test_no_sink_type_is_named_outside_its_module() -> None:
    """Settings, the CLI and the rest of the service ask the spec instead."""
    named = re.compile(r"""type\s*==\s*["'](http|slack|s3|jsonl)["']""")
    for path in (ROOT / "receiver").rglob("*.py"):
        assert not named.search(path.read_text()), f"{path} names a sink type"


# ---------------------------------------------------------------- check


GOOD: list[tuple[str, dict[str, Any]]] = [
    ("http", {"url": "https://backend.example/hooks"}),
    ("http", {"url": "http://u:p@127.0.0.1:8080/x?token=1", "secret": WHSEC,
              "headers": {"X-Team": "render", "X-Api-Key": "abc"}}),
    ("slack", {"url": SLACK_URL}),
    ("s3", {"bucket": BUCKET}),
    ("s3", {"bucket": BUCKET, "prefix": "", "endpoint_url": "http://127.0.0.1:9000",
            "region": "auto", "mirror_outputs": True, "allow_private_networks": False,
            "max_output_bytes": 1, "output_timeout_s": 0.5}),
    ("jsonl", {"path": "./events.jsonl"}),
]


@pytest.mark.parametrize(("type_", "options"), GOOD)
def test_good_options_have_no_problem(type_: str, options: dict[str, Any]) -> None:
    assert SINK_SPECS[type_].check(options) == []


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("http", {}, 'url is required for a "http" sink'),
    ("http", {"url": "ftp://example.com/x"}, "url must be an http:// or https:// URL"),
    ("http", {"url": "example.com/x"}, "url must be an http:// or https:// URL"),
    ("http", {"url": "http://"}, "url must be an http:// or https:// URL"),
    ("http", {"url": "http://[::1/x"}, "its host or port cannot be read"),
    ("http", {"url": "http://h:99999/"}, "its host or port cannot be read"),
    ("http", {"url": "http://h:0/"}, "port 0"),
    ("http", {"url": "http://h/a b"}, "url contains a space"),
    ("http", {"url": 3}, "url must be an http:// or https:// URL"),
    ("http", {"url": "http://h/", "secret": "plain"}, "secret must be a Standard Webhooks"),
    ("http", {"url": "http://h/", "secret": "whsec_!!!"}, "not valid base64"),
    ("http", {"url": "http://h/", "headers": "X-Team: a"}, "headers must be a table of strings"),
    ("http", {"url": "http://h/", "headers": {"X-Team": 3}}, "headers must be a table of strings"),
    ("http", {"url": "http://h/", "headers": {"X Team": "a"}}, "is not a header name"),
    ("http", {"url": "http://h/", "headers": {"content-type": "text/plain"}},
     'hookyard sets "content-type" itself'),
    ("http", {"url": "http://h/", "headers": {"X-Team": "a\r\nX-Evil: 1"}}, "printable ASCII"),
    ("http", {"url": "http://h/", "headers": {"X-Team": "é"}}, "printable ASCII"),
    ("http", {"url": "http://h/", "headers": {"X-Team": "a\n"}}, "printable ASCII"),
    ("http", {"url": "http://h/", "headers": {"X-Team\n": "a"}}, "is not a header name"),
    ("http", {"url": "http://u:p@h/", "headers": {"authorization": "Basic x"}},
     "Authorization cannot go with credentials in url"),
    ("slack", {}, 'url is required for a "slack" sink'),
    ("slack", {"url": "hooks.slack.com/services/x"}, "url must be an http:// or https:// URL"),
    ("s3", {}, 'bucket is required for a "s3" sink'),
    ("s3", {"bucket": ""}, "bucket must not be empty"),
    ("s3", {"bucket": "Bad Bucket!"}, "is not a name S3 accepts"),
    ("s3", {"bucket": "b" * 256}, "is not a name S3 accepts"),
    ("s3", {"bucket": BUCKET, "prefix": 3}, "prefix must be a string, not 3"),
    ("s3", {"bucket": BUCKET, "region": "us east 1"}, "is not a region name"),
    ("s3", {"bucket": BUCKET, "region": ""}, "region must not be empty"),
    ("s3", {"bucket": BUCKET, "endpoint_url": "not a url"}, "endpoint_url contains a space"),
    ("s3", {"bucket": BUCKET, "endpoint_url": "ftp://h"}, "endpoint_url must be an http://"),
    ("s3", {"bucket": BUCKET, "endpoint_url": "http://exa_mple.com"}, "botocore refuses"),
    ("s3", {"bucket": BUCKET, "mirror_outputs": "yes"}, "mirror_outputs must be true or false"),
    ("s3", {"bucket": BUCKET, "allow_private_networks": 1}, "must be true or false, not 1"),
    ("s3", {"bucket": BUCKET, "max_output_bytes": 0}, "max_output_bytes must be at least 1"),
    ("s3", {"bucket": BUCKET, "max_output_bytes": True}, "max_output_bytes must be a whole"),
    ("s3", {"bucket": BUCKET, "max_output_bytes": 1.5}, "max_output_bytes must be a whole"),
    ("s3", {"bucket": BUCKET, "output_timeout_s": 0}, "output_timeout_s must be at least 0.1"),
    ("s3", {"bucket": BUCKET, "output_timeout_s": math.inf}, "a number of seconds"),
    ("s3", {"bucket": BUCKET, "output_timeout_s": "60"}, "a number of seconds, not a string"),
    ("jsonl", {}, 'path is required for a "jsonl" sink'),
    ("jsonl", {"path": ""}, "path must not be empty"),
    ("jsonl", {"path": 3}, "path must be a string, not 3"),
    ("jsonl", {"path": "a\x00b"}, "NUL"),
]


@pytest.mark.parametrize(("type_", "options", "problem"), BAD)
def test_each_problem_names_the_key_and_the_fix(
    type_: str, options: dict[str, Any], problem: str
) -> None:
    problems = SINK_SPECS[type_].check(options)
    assert len(problems) == 1 and problem in problems[0], problems


def test_a_value_under_the_wrong_key_is_not_echoed() -> None:
    """A string where a flag or a number belongs may be a credential pasted in the wrong
    place; a URL that fails may carry a password: no message repeats either."""
    problems = [
        *SINK_SPECS["s3"].check({"bucket": BUCKET, "mirror_outputs": PASSWORD,
                                 "output_timeout_s": PASSWORD}),
        *SINK_SPECS["http"].check({"url": f"ftp://u:{PASSWORD}@h/", "headers": {"X-A": 3}}),
        *SINK_SPECS["http"].check({"url": "http://h/",
                                   "headers": {"Authorization": f"{PASSWORD}\n"}}),
        *SINK_SPECS["slack"].check({"url": f"http://h/services/{PASSWORD} x"}),
    ]
    assert len(problems) == 6
    assert not [p for p in problems if PASSWORD in p]


def test_without_the_s3_extra_check_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3, "get_session", None)
    assert SINK_SPECS["s3"].check({"bucket": BUCKET}) == [s3.MISSING_EXTRA]
    # the other problems are still all reported, the extra last
    assert SINK_SPECS["s3"].check({"bucket": BUCKET, "mirror_outputs": 1})[-1] == s3.MISSING_EXTRA


# ---------------------------------------------------------------- describe and secrets


@pytest.mark.parametrize(
    ("type_", "options", "shown"),
    [
        ("http", {"url": f"https://u:{PASSWORD}@h.example/x?token={TOKEN}&v=1#{TOKEN}"},
         "https://***@h.example/x?token=***&v=***#***"),
        ("slack", {"url": SLACK_URL}, "a Slack incoming webhook"),
        ("s3", {"bucket": BUCKET}, f"s3://{BUCKET}/"),
        ("s3", {"bucket": BUCKET, "prefix": "hy/",
                "endpoint_url": f"http://k:{PASSWORD}@127.0.0.1:9000/?sig={TOKEN}"},
         f"s3://{BUCKET}/hy/ at http://***@127.0.0.1:9000/?sig=***"),
        ("jsonl", {"path": "./events.jsonl"}, "./events.jsonl"),
    ],
)
def test_describe_says_where_without_credentials(
    type_: str, options: dict[str, Any], shown: str
) -> None:
    spec = SINK_SPECS[type_]
    assert spec.describe(options) == shown
    assert not [s for s in spec.secrets(options) if s in shown]


@pytest.mark.parametrize(
    ("type_", "options", "secret"),
    [
        ("http", {"url": "http://h/", "secret": WHSEC}, WHSEC),
        ("http", {"url": f"http://u:{PASSWORD}@h/"}, PASSWORD),
        ("http", {"url": f"http://h/?token={TOKEN}"}, TOKEN),
        ("http", {"url": "http://h/", "headers": {"Authorization": f"Bearer {TOKEN}"}}, TOKEN),
        ("http", {"url": "http://h/", "headers": {"X-Api-Key": TOKEN}}, TOKEN),
        ("slack", {"url": SLACK_URL}, SLACK_URL),
        ("slack", {"url": SLACK_URL}, "/services/T0001/B0002/Zx9SecretToken"),
        ("s3", {"bucket": BUCKET, "endpoint_url": f"http://k:{PASSWORD}@h/"}, PASSWORD),
    ],
)
def test_secrets_name_what_no_output_may_show(
    type_: str, options: dict[str, Any], secret: str
) -> None:
    assert secret in SINK_SPECS[type_].secrets(options)


def test_plain_values_are_no_secrets() -> None:
    """Masking an ordinary word would blank it out of every log line."""
    http_secrets = SINK_SPECS["http"].secrets({"url": "http://h/", "headers": {"X-Team": "render"}})
    assert "render" not in http_secrets
    assert SINK_SPECS["jsonl"].secrets({"path": "./events.jsonl"}) == []
    assert SINK_SPECS["s3"].secrets({"bucket": BUCKET, "prefix": "hy/"}) == []


def test_a_credential_header_is_masked_like_every_configured_secret(tmp_path: Path) -> None:
    """Settings ask the spec: an Authorization header's token joins the values no log line,
    banner or stored attempt error shows."""
    config = settings_mod.load(str(write_config(tmp_path, "http", {
        "url": "http://127.0.0.1:9/x", "headers": {"Authorization": f"Bearer {TOKEN}"},
    })))
    assert TOKEN in config.secret_values()
    masked = config.sinks["out"].mask(f"POST answered 401: bad token {TOKEN}")
    assert TOKEN not in masked and "answered 401" in masked
    own = SinkSettings("out", "http", {"url": "http://h/", "headers": {"X-Auth-Token": TOKEN}})
    assert TOKEN not in own.mask(f"echo {TOKEN}")


# ---------------------------------------------------------------- check and serve agree


def write_config(directory: Path, type_: str, options: Mapping[str, Any]) -> Path:
    """A config with one sink `out` of `type_` with `options`, routed from every source."""
    lines = [f"{key} = {toml(value)}" for key, value in options.items()]
    path = directory / "hookyard.toml"
    path.write_text(
        f'[server]\ndatabase = "sqlite:///{directory / "hookyard.db"}"\n\n'
        f'[sinks.out]\ntype = "{type_}"\n' + "\n".join(lines) + '\n\n[[routes]]\nsinks = ["out"]\n'
    )
    return path


def toml(value: Any) -> str:
    """`value` as a TOML value (strings JSON-escaped, which TOML reads the same, DEL too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value).replace("\x7f", "\\u007f")
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml(k)} = {toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return repr(value)


def run_cli(*args: str) -> tuple[int, str]:
    """`hookyard ARGS` in-process: its exit code and what it wrote to stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, err.getvalue()


Deliver = Callable[[SinkSettings], Awaitable[None]]


def check_agrees_with_serve(type_: str, options: Mapping[str, Any], deliver: Deliver) -> None:
    """The property: `check` accepts <=> the sink is built from the loaded options and
    delivers an event (what `serve` does with them); what `check` refuses, `serve` refuses
    with the same words before it binds a port."""
    directory = Path(tempfile.mkdtemp(prefix="spec-"))
    path = str(write_config(directory, type_, options))
    code, said = run_cli("check", "--config", path)
    event("check accepts" if code == 0 else "check refuses")
    if code == 0:
        sink = settings_mod.load(path).sinks["out"]
        asyncio.run(deliver(sink))
        shown = run_cli("check", "--config", path, "--json")
        assert shown[0] == 0
        assert not [s for s in SINK_SPECS[type_].secrets(sink.options) if s in str(shown)]
    else:
        assert code == 2 and "[sinks.out]" in said, said
        assert run_cli("serve", "--config", path, "--port", "0") == (code, said)


async def send_once(sink: SinkSettings) -> int | None:
    """Build the sink as the delivery engine does (its own pools) and send EVENT once."""
    ctx = sink_context(sink.concurrency, sink.timeout_s)
    try:
        built = SINK_SPECS[sink.type].create(sink.name, sink.options, ctx)
        try:
            status, _ = status_of(await built.send(EVENT))  # s3: a Sent with the mirrored
            return status
        finally:
            await built.aclose()
    finally:
        await close_context(ctx)


async def delivered_2xx(sink: SinkSettings) -> None:
    status = await send_once(sink)
    assert status is not None and 200 <= status < 300, status


def value(good: list[Any], bad: list[Any], *, required: bool = False) -> st.SearchStrategy[Any]:
    """One key's value: a bad one about one time in ten (so that several keys together are
    still often all good), else a good one or, for an optional key, none (ABSENT)."""
    fine = good if required else [ABSENT, *good]
    wrong = [ABSENT, *bad] if required else bad
    return st.integers(0, 9).flatmap(lambda n: st.sampled_from(wrong if n == 0 else fine))


ABSENT = object()
BAD_URLS: list[Any] = ["ftp://127.0.0.1/x", "127.0.0.1/x", "http://", "http://[::1/x",
                       "http://127.0.0.1:99999/", "http://127.0.0.1:0/", "http://h/a b", 42, ""]
PROPERTY = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def table(drawn: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in drawn.items() if value is not ABSENT}


@pytest.fixture(scope="module")
def receiver() -> Iterator[FakeSink]:
    with FakeSink() as server:
        yield server


@pytest.fixture(scope="module")
def slack_server() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with pytest.MonkeyPatch.context() as patch:
        # Dummy credentials from the environment; no shared files, no instance metadata.
        patch.setenv("AWS_ACCESS_KEY_ID", MotoS3.ACCESS_KEY)
        patch.setenv("AWS_SECRET_ACCESS_KEY", MotoS3.SECRET_KEY)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                     "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        with MotoS3() as server:
            with server.client() as client:
                client.create_bucket(Bucket=BUCKET)
            yield server


@PROPERTY
@given(data=st.data())
def test_http_check_agrees_with_serve(receiver: FakeSink, data: st.DataObject) -> None:
    port = receiver.port
    urls = [f"{receiver.url}/hooks", f"HTTP://127.0.0.1:{port}",
            f"http://u:{PASSWORD}@127.0.0.1:{port}/x?t={TOKEN}"]
    headers = [{}, {"X-Team": "render"}, {"Authorization": f"Bearer {TOKEN}", "X-B": "a\tb"}]
    bad_headers = [{"X Team": "a"}, {"X-Team": "a\nb"}, {"X-Team": "a\n"},
                   {"Content-Length": "1"}, {"X-Team": 3}, "X-Team: a", {"X-Team": "é"}]
    options = table({
        "url": data.draw(value(urls, BAD_URLS, required=True)),
        "secret": data.draw(value([WHSEC], ["whsec_!!!", "plain-secret", 3])),
        "headers": data.draw(value(headers, bad_headers)),
    })
    check_agrees_with_serve("http", options, delivered_2xx)


@PROPERTY
@given(data=st.data())
def test_slack_check_agrees_with_serve(slack_server: FakeSlack, data: st.DataObject) -> None:
    url = data.draw(value([slack_server.webhook_url("ok")], BAD_URLS, required=True))
    check_agrees_with_serve("slack", table({"url": url}), delivered_2xx)


@PROPERTY
@given(data=st.data())
def test_s3_check_agrees_with_serve(moto: MotoS3, data: st.DataObject) -> None:
    bad_endpoints = ["not a url", "ftp://127.0.0.1", "http://", 7, "http://exa_mple.com"]
    options = table({
        "bucket": data.draw(value([BUCKET], ["Bad Bucket!", "", 3, "b" * 256], required=True)),
        # never left out: without it the sink would talk to AWS
        "endpoint_url": data.draw(st.sampled_from([moto.endpoint_url] * 20 + bad_endpoints)),
        "prefix": data.draw(value(["", "hookyard/", "with space/ü"], [3, True])),
        "region": data.draw(value(["us-east-1", "eu-west-1", "auto"],
                                  ["us east 1", "-bad", 7, ""])),
        "mirror_outputs": data.draw(value([True, False], ["yes"])),
        "allow_private_networks": data.draw(value([True, False], ["no", 1])),
        "max_output_bytes": data.draw(value([1, 10**9], [0, -5, True, 1.5, "10"])),
        "output_timeout_s": data.draw(value([0.1, 60, 2.5], [0, -1, "60", math.inf, True])),
    })
    check_agrees_with_serve("s3", options, delivered_2xx)


@PROPERTY
@given(data=st.data())
def test_jsonl_check_agrees_with_serve(data: st.DataObject) -> None:
    directory = Path(tempfile.mkdtemp(prefix="spec-jsonl-"))
    good = [str(directory / "events.jsonl"), str(directory / "deep" / "er" / "e.jsonl")]
    path = data.draw(value(good, ["", 3, "a\x00b", ["x"]], required=True))

    async def appended(sink: SinkSettings) -> None:
        assert await send_once(sink) is None
        last = (await asyncio.to_thread(Path(sink.options["path"]).read_text)).splitlines()[-1]
        assert json.loads(last)["id"] == EVENT["id"]

    check_agrees_with_serve("jsonl", table({"path": path}), appended)


def test_without_the_s3_extra_check_and_serve_both_refuse_alike(tmp_path: Path) -> None:
    """`check` used to pass a config that `serve` then refused (the extra was looked for only
    when the sink was built). Real processes whose import of aiobotocore fails, as on an
    install without `hookyard[s3]`."""
    path = write_config(tmp_path, "s3", {"bucket": BUCKET, "endpoint_url": "http://127.0.0.1:9"})
    blocked = "import sys; sys.modules['aiobotocore'] = None; from receiver.cli import main; " \
              "sys.exit(main())"

    def hookyard(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", blocked, *args], capture_output=True,
                              text=True, timeout=60, cwd=ROOT)

    check = hookyard("check", "--config", str(path))
    serve = hookyard("serve", "--config", str(path), "--port", "0")
    assert check.returncode == 2, check.stdout + check.stderr
    assert f"[sinks.out] {s3.MISSING_EXTRA}" in check.stderr
    assert (serve.returncode, serve.stderr) == (check.returncode, check.stderr)
