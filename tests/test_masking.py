"""No credential in any output (issue 9, "Hostile world", item 4), and the smaller holes of
item 7: control characters in CLI output, and a false "route names an undefined sink" error.

A configured URL can carry credentials in its userinfo and query. They must not appear in the
banner, `hookyard check`, any log line, or the attempt errors the admin API and the web UI show.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
import time
from pathlib import Path

import pytest
import structlog

from receiver import cli, logs
from receiver import settings as settings_mod
from receiver.core.errors import ConfigError
from receiver.core.masking import mask_url, url_secrets
from receiver.settings import SinkSettings
from receiver.store import Job
from receiver.store.sqlite import SqliteStore
from tests.admin_kit import TOKEN, api, creation, post
from tests.fakes import FakeSink, Reply
from tests.support import RENDERGRID_SECRET, Server, app_client, wait_for

PASSWORD = "s3cretpass"
QUERY_SECRET = "SECRETVALUE"
ENDPOINT_SECRET = "minio-key-0123"
BASE_SECRET = "base-url-token-9876"

CONFIG = """
[server]
database = "sqlite:///{tmp}/hookyard.db"
admin_token = "{token}"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["{secret}"]
api_key = "rg-api-key-0123456789"
base_url = "http://poller:{base_secret}@127.0.0.1:9/api?key={base_secret}"

[sinks.hook]
type = "http"
url = "http://user:{password}@127.0.0.1:{port}/x?token={query}&plain=1"
retry_schedule_s = [0.1]
max_attempts = 2

[sinks.archive]
type = "s3"
bucket = "renders"
endpoint_url = "http://minio:{endpoint}@127.0.0.1:9/"

[[routes]]
sources = ["*"]
types = ["generation.completed"]
sinks = ["hook"]
"""
SECRETS = (PASSWORD, QUERY_SECRET, ENDPOINT_SECRET, BASE_SECRET)


def write(tmp: Path, port: int = 9) -> Path:
    path = tmp / "hookyard.toml"
    path.write_text(CONFIG.format(tmp=tmp, token=TOKEN, secret=RENDERGRID_SECRET,
                                  password=PASSWORD, port=port, query=QUERY_SECRET,
                                  endpoint=ENDPOINT_SECRET, base_secret=BASE_SECRET))
    return path


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} shown in {where}:\n{text}"


# ---------------------------------------------------------------- the helpers


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pass@host:8080/p/a?token=abc&x=1", "http://***@host:8080/p/a?token=***&x=***"),
        ("https://host/p?just-a-token", "https://host/p?***"),
        ("https://TOKEN@host/p#frag", "https://***@host/p#***"),
        ("https://host/plain", "https://host/plain"),
        ("http://u:p@[::1]:9/x", "http://***@[::1]:9/x"),
        ("http://[::1/x", "***"),  # unparseable: nothing of it
        ("http://host:99999999/x", "***"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_url_secrets_are_the_credential_parts_as_written_and_decoded() -> None:
    found = url_secrets("http://us%65r:p%40ss-word@h/x?token=a%2Fbcd&x=12&flag")
    assert {"us%65r:p%40ss-word", "p%40ss-word", "p@ss-word", "a%2Fbcd", "a/bcd", "flag",
            "user"} <= set(found)
    assert "12" not in found  # too short to mask everywhere
    assert url_secrets("https://host/plain") == []


def test_settings_secret_values_hold_every_url_credential(tmp_path: Path) -> None:
    values = settings_mod.load(str(write(tmp_path))).secret_values()
    for secret in SECRETS:
        assert secret in values


def test_a_sink_masks_its_own_credentials_even_built_by_hand() -> None:
    sink = SinkSettings("hook", "http", {"url": f"http://u:{PASSWORD}@h/x?t={QUERY_SECRET}"})
    text = sink.mask(f"POST http://u:{PASSWORD}@h/x?t={QUERY_SECRET} answered 500")
    assert_no_secret(text, "the masked error")
    assert "answered 500" in text


# ---------------------------------------------------------------- banner and check


def test_check_output_masks_urls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write(tmp_path))
    assert cli.main(["check", "--config", config]) == 0
    human = capsys.readouterr().out
    assert "http://***@127.0.0.1:9/x?token=***&plain=***" in human
    assert cli.main(["check", "--config", config, "--json"]) == 0
    as_json = capsys.readouterr().out
    json.loads(as_json)
    for text, where in ((human, "check"), (as_json, "check --json")):
        assert_no_secret(text, where)


# ---------------------------------------------------------------- logs


def test_tracebacks_in_log_lines_are_masked(tmp_path: Path) -> None:
    """format_exc_info ran after the redactor, so a traceback's text was never masked."""
    config = settings_mod.load(str(write(tmp_path)))
    stream = io.StringIO()
    logs.configure(config.secret_values(), stream=stream)
    try:
        try:
            raise RuntimeError(f"connect to http://user:{PASSWORD}@h/?token={QUERY_SECRET}")
        except RuntimeError as exc:
            structlog.get_logger("t").error("sink.crashed", exc_info=exc)
            logging.getLogger("uvicorn.error").error("boom", exc_info=exc)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    out = stream.getvalue()
    assert out.count("RuntimeError") >= 2
    assert_no_secret(out, "log lines")


# ---------------------------------------------------------------- end to end


def test_a_failing_sink_with_credentials_leaks_them_nowhere(tmp_path: Path) -> None:
    """A real server whose HTTP sink (user:pass@ and ?token=) answers 500: the banner, every
    log line (delivery.retry, delivery.dead) and the attempt errors of GET /v1/events/{id}."""
    with FakeSink(default=Reply(500, "down")) as sink:
        config = write(tmp_path, sink.port)
        server = Server(config, tmp_path).start()
        try:
            event_id = post(server, config, creation("leak-1"))
            with api(server) as client:

                def dead() -> bool:
                    shown = client.get(f"/v1/events/{event_id}").json()
                    return [d["status"] for d in shown["deliveries"]] == ["dead"]

                wait_for(dead, what="the delivery to die")
                answer = client.get(f"/v1/events/{event_id}").text
                listed = client.get("/v1/deliveries").text
        finally:
            server.stop()
        assert len(sink.requests) == 2  # both attempts reached the sink, with credentials
    shown = json.loads(answer)
    errors = [a["error"] for d in shown["deliveries"] for a in d["attempt_log"]]
    assert len(errors) == 2 and all("500" in e for e in errors), errors
    output = server.output()
    assert "delivery.retry" in output and "delivery.dead" in output
    assert "listening on" in output  # the banner
    for text, where in ((answer, "GET /v1/events/{id}"), (listed, "GET /v1/deliveries"),
                        (output, "the banner and the logs")):
        assert_no_secret(text, where)


# ---------------------------------------------------------------- CLI control characters


def test_cli_escapes_control_characters_from_providers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write(tmp_path))
    store = SqliteStore(str(tmp_path / "hookyard.db"))

    async def seed() -> None:
        await store.open()
        try:
            now = time.time()
            await store.watch_job(Job("rendergrid", "job\x1b[2J\x1b]0;owned\x07", "failed", {},
                                      now, now + 60, now, last_error="bad\rforged line\u202e"))
        finally:
            await store.close()

    asyncio.run(seed())
    assert cli.main(["jobs", "list", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out and "\u202e" not in out
    assert "job\\x1b[2J\\x1b]0;owned\\x07" in out and "bad\\x0dforged line\\u202e" in out
    assert cli.main(["jobs", "list", "--config", config, "--json"]) == 0
    assert "\x1b" not in capsys.readouterr().out  # JSON escapes them itself


# ---------------------------------------------------------------- config errors


def test_an_invalid_sink_is_not_also_reported_undefined(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f"""
[sources.rendergrid]
provider = "rendergrid"
secrets = ["{RENDERGRID_SECRET}"]

[sources.broken]
provider = "nope"

[sinks.hook]
type = "http"
url = "ftp://example.com/x"

[[routes]]
sources = ["rendergrid", "broken"]
sinks = ["hook", "missing"]
""")
    with pytest.raises(ConfigError) as caught:
        settings_mod.load(str(path))
    message = caught.value.message
    assert "url must be an http:// or https:// URL" in message
    assert 'provider "nope" is unknown' in message
    assert 'names sink "missing", which is not defined' in message  # a real one still is
    assert 'sink "hook", which is not defined' not in message
    assert 'source "broken", which is not defined' not in message


# ---------------------------------------------------------------- errors stored elsewhere


async def test_job_and_old_delivery_errors_are_masked_when_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A poll's network error may quote the source's base_url (the poller stores it as the
    job's last_error), and rows stored before attempt errors were masked may hold a sink URL:
    the admin API and the CLI mask both when they show them."""
    config = settings_mod.load(str(write(tmp_path)))
    leak = f"ConnectError: http://poller:{BASE_SECRET}@127.0.0.1:9/api?key={BASE_SECRET}"
    async with app_client(config) as (client, hookyard):
        now = time.time()
        await hookyard.store.watch_job(
            Job("rendergrid", "j1", "watching", {}, now, now + 600, now + 600, last_error=leak))
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        jobs = (await client.get("/v1/jobs")).text
    assert "ConnectError" in jobs
    assert_no_secret(jobs, "GET /v1/jobs")
    for flag in ([], ["--json"]):
        assert await asyncio.to_thread(
            cli.main, ["jobs", "list", "--config", str(config.path), *flag]) == 0
        out = capsys.readouterr().out
        assert "ConnectError" in out
        assert_no_secret(out, "hookyard jobs list")


async def test_job_and_old_delivery_errors_are_masked_in_the_web_ui(tmp_path: Path) -> None:
    """The web UI shows the same error texts as the admin API (an event's deliveries and
    attempts, a sink's dead letters, a job's poll error) and masks them the same way."""
    config = settings_mod.load(str(write(tmp_path)))
    leak = f"ConnectError: http://user:{PASSWORD}@127.0.0.1:9/x?token={QUERY_SECRET}"
    poll_leak = f"ConnectError: http://poller:{BASE_SECRET}@127.0.0.1:9/api?key={BASE_SECRET}"
    store = SqliteStore(str(tmp_path / "hookyard.db"))
    await store.open()  # the schema; the rows below as a version before masking wrote them
    await store.close()
    with sqlite3.connect(tmp_path / "hookyard.db") as db:
        now = time.time()
        db.execute("INSERT INTO events (id, idempotency_key, type, source, provider, via,"
                   " received_at, event_json, raw_body, headers_json) VALUES ('evt_old', 'k',"
                   " 'generation.completed', 'rendergrid', 'rendergrid', 'webhook', 'x',"
                   " ?, x'7b7d', '{}')", (json.dumps({"id": "evt_old", "source": "rendergrid",
                                                  "type": "generation.completed"}),))
        cur = db.execute("INSERT INTO deliveries (event_id, sink, status, attempts,"
                         " next_attempt_at, last_error, created_at, updated_at)"
                         " VALUES ('evt_old', 'hook', 'dead', 1, ?, ?, ?, ?)",
                         (now, leak, now, now))
        db.execute("INSERT INTO attempts (delivery_id, started_at, duration_ms, error, outcome)"
                   " VALUES (?, ?, 5, ?, 'dead')", (cur.lastrowid, now, leak))
    async with app_client(config) as (client, hookyard):
        now = time.time()
        await hookyard.store.watch_job(Job("rendergrid", "j1", "failed", {}, now, now + 600,
                                           now + 600, last_error=poll_leak,
                                           updated_at=now))  # not old: the pruner keeps it
        r = await client.post("/ui/login", data={"token": TOKEN})
        assert r.status_code == 303
        shown = {path: (await client.get(path)).text
                 for path in ("/ui/events/evt_old", "/ui/sinks/hook", "/ui/jobs")}
    for path, text in shown.items():
        assert "ConnectError" in text, path  # the error is shown, its credentials are not
        assert_no_secret(text, path)
