"""Numbers and JSON from outside, on every path (issue 9, "Hostile world", item 3).

One parser (receiver.core.jsonx) reads every JSON body from outside and one integer parser every
number typed into a URL or a CLI. What must hold:

* any bytes parse to a value or a `JSONError`, never another exception, and what parses always
  encodes again as strict JSON (no NaN, no Infinity, no lone surrogate);
* a verified webhook whose number does not fit a double (a 400-digit `cost`, `1e400`) is stored
  (200), the number read as null, the raw bytes kept; listing it and sending it to a sink works;
* a poll answer with NaN, Infinity or 1e400 never puts NaN or Infinity into an event;
* admin bodies refuse such numbers with 400 naming the field, and nothing is stored;
* `?limit=`, cursors and delivery ids of any text answer 4xx, never 500;
* a `Retry-After` of any text (`²`, 5,000 digits, a date in year 1 or 9999) is a wait from 0 to
  an hour or no advice (receiver.core.http.retry_after_s, for sinks and polls), never an error;
* the store refuses non-finite floats at write time, and reads rows written before that rule.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers import providers
from handlers.providers.base import DONE, RUNNING, PollContext
from handlers.sinks.base import SinkContext, SinkError
from handlers.sinks.http import HttpSink
from receiver import cli
from receiver import settings as settings_mod
from receiver.app import Hookyard
from receiver.core import events, http, jsonx
from receiver.store import EventFilter, Job, NewEvent
from receiver.store.sqlite import SqliteStore
from tests.support import RENDERGRID_SECRET, app_client, signed_headers, wait_until

TOKEN = "admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FIXTURES = Path(__file__).parent / "fixtures"
BIG = b"9" * 400  # a 400-digit integer: no double holds it

CONFIG = """
[server]
database = "sqlite:///{tmp}/hookyard.db"
admin_token = "{token}"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["{secret}"]
api_key = "rg-api-key-0123456789"
base_url = "http://127.0.0.1:9"

[sinks.log]
type = "jsonl"
path = "{tmp}/events.jsonl"

[[routes]]
sources = ["*"]
types = ["*"]
sinks = ["log"]
"""


def strict(value: Any) -> str:
    """`value` as JSON, refusing what strict JSON cannot carry (NaN, Infinity)."""
    return json.dumps(value, allow_nan=False)


def strict_loads(text: str | bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


# ---------------------------------------------------------------- the parser itself

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10,
)
hostile_numbers = st.sampled_from([
    b"1e400", b"-1e400", b"1E+999", b"-0.5e309", BIG, b"-" + BIG, b"9" * 5000, b"1e-400",
    b"18446744073709551615", b"18446744073709551616", b"-9223372036854775809", b"NaN",
    b"Infinity", b"-Infinity", b"0x10", b"01", b"1.", b".5", b"+1",
])
hostile_strings = st.sampled_from([b'"\\ud800"', b'"\\udfff\\ud800"', b'"\\ud83d\\ude00"',
                                   b'"\x1b[2J"', b'"\\u001b"', b'"\xff"', b'"\xed\xa0\x80"'])


def _splice(data: st.DataObject) -> bytes:
    """Valid JSON with a hostile number or string put where a value goes, at some depth."""
    doc = json.dumps(data.draw(json_values)).encode()
    piece = data.draw(st.one_of(hostile_numbers, hostile_strings))
    template = data.draw(st.sampled_from([
        b"%s", b"[%s]", b'{"a":%s}', b'{"a":[1,%s],"b":@}', b'[@,{"k":{"j":[%s]}}]',
        b'{"\\ud800":%s}', b'{"cost":%s,"raw":@}',
    ]))
    return template.replace(b"@", doc).replace(b"%s", piece)


@PROPERTY
@given(body=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                      hostile_numbers, hostile_strings),
       policy=st.sampled_from([jsonx.NULL, jsonx.REFUSE]))
def test_any_bytes_parse_to_strict_json_or_a_json_error(body: bytes, policy: jsonx.Policy) -> None:
    try:
        value = jsonx.loads(body, numbers=policy)
    except jsonx.JSONError:
        return
    text = strict(value)  # no NaN, no Infinity
    text.encode("utf-8")  # no lone surrogate
    assert jsonx.loads(jsonx.dumps(value), numbers=jsonx.REFUSE) == value


@PROPERTY
@given(data=st.data(), policy=st.sampled_from([jsonx.NULL, jsonx.REFUSE]))
def test_hostile_values_inside_valid_json(data: st.DataObject, policy: jsonx.Policy) -> None:
    """Big numbers, NaN and surrogates anywhere in a document: a strict value (big numbers as
    null under NULL), OutOfRange under REFUSE, or a JSONError — never anything else."""
    body = _splice(data)
    try:
        value = jsonx.loads(body, numbers=policy)
    except jsonx.OutOfRange as exc:
        assert policy == jsonx.REFUSE and "does not fit a 64-bit float" in str(exc)
        return
    except jsonx.JSONError:
        return
    strict(value).encode("utf-8")


@PROPERTY
@given(value=json_values)
def test_what_orjson_reads_is_read_the_same(value: Any) -> None:
    body = json.dumps(value).encode()
    assert jsonx.loads(body, numbers=jsonx.NULL) == orjson.loads(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"cost":' + BIG + b"}", {"cost": None}),
        (b'[1e400, -1e999, 1e-400, 2]', [None, None, 0.0, 2]),
        (b"18446744073709551616", 18446744073709551616.0),  # beyond 64 bits: a float
        (b"-9223372036854775808", -9223372036854775808),
        (b"\xef\xbb\xbf{}", {}),  # a UTF-8 byte order mark is ignored
        (b'{"a": {"b": [' + b"9" * 5000 + b"]}}", {"a": {"b": [None]}}),
    ],
)
def test_out_of_range_numbers_read_as_null(body: bytes, expected: Any) -> None:
    assert jsonx.loads(body, numbers=jsonx.NULL) == expected


@pytest.mark.parametrize(
    "body",
    [b"NaN", b'{"a": Infinity}', b'[1e400, NaN]', b'{"a": "\\ud800"}', b'[1e400, "\\udc00"]',
     b"[" * 2000 + b"]" * 2000, b"[" * 1100 + b"1e400" + b"]" * 1100, b'{"a": 1e400} x',
     b'[1e400, "\xff"]', "\ufeff".encode("utf-16")],
)
def test_what_is_not_strict_json_is_a_json_error(body: bytes) -> None:
    for policy in (jsonx.NULL, jsonx.REFUSE):
        with pytest.raises(jsonx.JSONError):
            jsonx.loads(body, numbers=policy)


def test_refused_numbers_name_where_they_are() -> None:
    with pytest.raises(jsonx.OutOfRange) as caught:
        jsonx.loads(b'{"metadata": {"sizes": [1, 2, 1e400]}}', numbers=jsonx.REFUSE)
    assert caught.value.path == "metadata.sizes[2]"
    assert str(caught.value).startswith("metadata.sizes[2]: the number 1e400")


@PROPERTY
@given(text=st.one_of(st.text(max_size=30), st.integers().map(str),
                      st.sampled_from(["²", "٣", "1_000", " 1", "1 ", "+1", "-1", "0x1", "1e3",
                                       "9" * 5000, "\u0661\u0660", "\uff11"])))
def test_whole_numbers_are_ascii_digits_in_range_or_a_named_error(text: str) -> None:
    try:
        value = jsonx.whole_number("limit", text, 1, 500)
    except jsonx.NumberInvalid as exc:
        assert "limit" in str(exc)
        return
    assert text.isascii() and text.isdigit() and 1 <= value <= 500 and value == int(text)


@PROPERTY
@given(text=st.one_of(st.text(max_size=40), st.integers().map(str),
                      st.sampled_from(["²", "٣", "\uff11", "1²", "9" * 5000, "1e3", "nan", "-1",
                                       "Wed, 21 Oct 2015 07:28:00 GMT",
                                       "Fri, 31 Dec 9999 23:59:59 GMT",
                                       "Mon, 01 Jan 0001 00:00:00 +9999"])))
def test_retry_after_of_any_text_is_seconds_in_range_or_none(text: str) -> None:
    """The one Retry-After parser, for sinks and polls alike: `²` is a digit to str.isdigit()
    and raised in float(); whatever a peer sends is a wait from 0 to an hour, or no advice."""
    wait = http.retry_after_s(text, now=1_700_000_000.0)
    assert wait is None or (math.isfinite(wait) and 0 <= wait <= http.RETRY_AFTER_MAX_S), wait


@pytest.mark.parametrize(("text", "wait"), [
    ("²", None), ("٣", None), ("\uff11", None), ("1²", None), ("1e3", None), ("-1", None),
    (" 30 ", 30.0), ("9" * 5000, 3600.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
])
def test_retry_after_by_hand(text: str, wait: float | None) -> None:
    assert http.retry_after_s(text) == wait


async def test_a_sink_answering_retry_after_of_non_ascii_digits_is_retried_as_usual() -> None:
    answer = httpx.MockTransport(
        lambda _: httpx.Response(503, headers=[(b"Retry-After", "²".encode())], content=b"busy"))
    async with httpx.AsyncClient(transport=answer) as client:
        sink = HttpSink("http://sink.test/hook", SinkContext(http=client, timeout_s=5))
        with pytest.raises(SinkError) as caught:
            await sink.send(events.generation_event(
                source="s", provider="rendergrid", job_id="j", status="completed",
                via="webhook", raw={}).to_json())
    assert caught.value.status_code == 503 and not caught.value.permanent
    assert caught.value.retry_after_s is None


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "1e999", "\u0661", "1_0", "", "0"])
def test_decimals_refuse_what_float_takes(text: str) -> None:
    with pytest.raises(jsonx.NumberInvalid, match="--deadline-s"):
        jsonx.decimal("--deadline-s", text, 0.001, 100.0)


def test_require_finite_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"event\.metadata\.a\[1\] is nan"):
        jsonx.require_finite({"metadata": {"a": [1.0, math.nan]}}, "event")
    jsonx.require_finite({"metadata": {"a": [1.0, 1e308]}, "cost": None}, "event")


# ---------------------------------------------------------------- poll answers

POLL_FIXTURES = {
    "rendergrid": "poll_completed.json", "renderful": "poll_completed_both.json",
    "rendernet": "poll_completed.json", "revid": "poll_completed.json",
    "genly": "poll_completed.json",
}


def _with(body: bytes, number: bytes) -> bytes:
    """The answer with a top-level `cost` (read by the providers that read one) and another
    field holding `number`; the last key wins, so the cost is ours."""
    head = body.rstrip()[:-1].rstrip()
    return head + b', "cost": ' + number + b', "hostile": [' + number + b"]}"


@pytest.mark.parametrize("provider", sorted(POLL_FIXTURES))
@pytest.mark.parametrize("number", [b"1e400", b"-1e400", BIG])
def test_poll_answers_with_huge_numbers_finish_with_null(provider: str, number: bytes) -> None:
    poll = providers.get(provider).poll
    assert poll is not None
    ctx = PollContext(provider, provider, "job_1", poll.base_url, "key")
    body = _with((FIXTURES / provider / POLL_FIXTURES[provider]).read_bytes(), number)
    answer = poll.parse_answer(ctx, 200, body)
    assert answer.state == DONE and answer.event is not None
    assert answer.event.cost is None
    assert answer.event.raw["hostile"] == [None]
    strict(answer.event.to_json())


@pytest.mark.parametrize("provider", sorted(POLL_FIXTURES))
@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
def test_poll_answers_with_nan_are_unreadable(provider: str, number: bytes) -> None:
    poll = providers.get(provider).poll
    assert poll is not None
    ctx = PollContext(provider, provider, "job_1", poll.base_url, "key")
    body = _with((FIXTURES / provider / POLL_FIXTURES[provider]).read_bytes(), number)
    answer = poll.parse_answer(ctx, 200, body)
    assert answer.state == RUNNING and answer.event is None


# ---------------------------------------------------------------- the service in-process


@contextlib.asynccontextmanager
async def service(tmp: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Hookyard]]:
    path = tmp / "hookyard.toml"
    path.write_text(CONFIG.format(tmp=tmp, token=TOKEN, secret=RENDERGRID_SECRET))
    async with app_client(settings_mod.load(str(path))) as (client, hookyard):
        client.headers.update(AUTH)
        yield client, hookyard


async def _wait_for_line(path: Path, timeout: float = 10.0) -> str:
    def text() -> str:
        return path.read_text() if path.exists() else ""

    await wait_until(lambda: text().endswith("\n"), timeout, what=f"a line in {path}")
    return text()


async def test_webhook_with_a_400_digit_cost_is_stored_and_delivered(tmp_path: Path) -> None:
    """Was a 500 on every retry (`int too large to convert to float`), never stored."""
    body = (b'{"event":"creation.completed","id":"big-1","status":"completed","cost":'
            + BIG + b',"result_urls":["https://cdn.example/a.jpg"]}')
    async with service(tmp_path) as (client, hookyard):
        headers = signed_headers(hookyard.settings, "rendergrid", body)
        r = await client.post("/hooks/rendergrid", content=body, headers=headers)
        assert r.status_code == 200, r.text
        event_id = r.json()["event_id"]
        listed = await client.get("/v1/events")
        assert listed.status_code == 200, listed.text
        [item] = listed.json()["items"]
        assert (item["id"], item["cost"], item["status"]) == (event_id, None, "completed")
        shown = (await client.get(f"/v1/events/{event_id}")).json()
        assert shown["raw"]["cost"] is None and shown["raw"]["id"] == "big-1"
        line = await _wait_for_line(tmp_path / "events.jsonl")
    sent = strict_loads(line)
    assert (sent["id"], sent["cost"], sent["raw"]["cost"]) == (event_id, None, None)
    # SQL on purpose: the API shows raw bodies parsed; this is about the stored bytes.
    with contextlib.closing(sqlite3.connect(tmp_path / "hookyard.db")) as db:
        (raw,) = db.execute("SELECT raw_body FROM events WHERE id = ?", (event_id,)).fetchone()
    assert raw == body  # the exact bytes, the big number included


async def test_webhook_with_1e400_is_stored_with_null(tmp_path: Path) -> None:
    body = b'{"event":"creation.completed","id":"inf-1","status":"completed","cost":1e400}'
    async with service(tmp_path) as (client, hookyard):
        headers = signed_headers(hookyard.settings, "rendergrid", body)
        r = await client.post("/hooks/rendergrid", content=body, headers=headers)
        assert r.status_code == 200, r.text
        event = (await client.get(f"/v1/events/{r.json()['event_id']}")).json()
        assert event["cost"] is None and event["raw"]["cost"] is None


async def test_watch_with_1e400_in_metadata_is_400_and_stores_nothing(tmp_path: Path) -> None:
    """Was: the job stored, a 500 answered, and every GET /v1/jobs a 500 from then on."""
    async with service(tmp_path) as (client, hookyard):
        for raw in (b'{"source":"rendergrid","job_id":"j1","metadata":{"order":1e400}}',
                    b'{"source":"rendergrid","job_id":"j1","metadata":{"a":[' + BIG + b"]}}",
                    b'{"source":"rendergrid","job_id":"j1","deadline_s":1e400}'):
            r = await client.post("/v1/jobs", content=raw)
            assert r.status_code == 400, r.text
            assert r.json()["error"] == "invalid_request"
        assert "metadata.order" in (await client.post("/v1/jobs", content=(
            b'{"source":"rendergrid","job_id":"j1","metadata":{"order":1e400}}'))).json()["message"]
        listed = await client.get("/v1/jobs")
        assert listed.status_code == 200 and listed.json()["items"] == []
        assert await hookyard.store.list_jobs() == []


def _cursor(position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


HOSTILE_PARAMS = ["²", "٣", "\uff11", "9" * 5000, "1_0", " 1", "-1", "0", "1e3", "", "NaN"]


async def test_admin_numbers_by_hand(tmp_path: Path) -> None:
    """Each of these raised before (`²`.isdigit() is true; int('²') is not)."""
    async with service(tmp_path) as (client, _):
        for value in HOSTILE_PARAMS:
            for path in ("/v1/events", "/v1/deliveries", "/v1/jobs"):
                r = await client.get(path, params={"limit": value})
                assert r.status_code == 400 and "limit" in r.json()["message"], (path, value)
            r = await client.post(f"/v1/deliveries/{quote(value, safe='')}/retry")
            assert r.status_code in (404, 405), (value, r.text)
        for cursor in (_cursor(["²"]), _cursor(["9" * 30]), _cursor([1e308]), _cursor([None]),
                       base64.urlsafe_b64encode(b'["1e400"').decode(),
                       base64.urlsafe_b64encode(b"[1e400]").decode(), "²", "%%%"):
            for path in ("/v1/deliveries", "/v1/events", "/v1/jobs"):
                r = await client.get(path, params={"cursor": cursor})
                assert r.status_code in (200, 400), (path, cursor, r.text)
                if r.status_code == 400:
                    assert "cursor" in r.json()["message"]


admin_text = st.one_of(st.text(max_size=30), st.sampled_from(HOSTILE_PARAMS))
admin_numbers = st.sampled_from([b"1e400", b"-1e999", BIG, b"NaN", b"1e308", b"-0", b"2"])


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("hostile-admin")
    runner = asyncio.Runner()
    cm = service(tmp)
    client, hookyard = runner.run(cm.__aenter__())
    yield runner, client, hookyard
    runner.run(cm.__aexit__(None, None, None))
    runner.close()


@PROPERTY
@given(limit=admin_text, cursor=admin_text, delivery=admin_text,
       path=st.sampled_from(["/v1/events", "/v1/deliveries", "/v1/jobs"]))
def test_admin_query_params_and_ids_never_5xx(
    running: Any, limit: str, cursor: str, delivery: str, path: str
) -> None:
    runner, client, _ = running
    r = runner.run(client.get(path, params={"limit": limit, "cursor": cursor}))
    assert r.status_code in (200, 400), (limit, cursor, r.text)
    packed = runner.run(client.get(path, params={"cursor": _cursor([cursor])}))
    assert packed.status_code in (200, 400), (cursor, packed.text)
    retry = runner.run(client.post(f"/v1/deliveries/{quote(delivery, safe='')}/retry"))
    assert retry.status_code < 500, (delivery, retry.text)


@PROPERTY
@given(number=admin_numbers, field=st.sampled_from(["metadata", "deadline_s", "since"]),
       route=st.sampled_from(["/v1/jobs", "/v1/replay"]))
def test_admin_body_numbers_never_5xx_and_never_poison_a_list(
    running: Any, number: bytes, field: str, route: str
) -> None:
    runner, client, _ = running
    value = b'{"n": ' + number + b"}" if field == "metadata" else number
    if route == "/v1/jobs":
        body = b'{"source":"rendergrid","job_id":"p1","' + field.encode() + b'":' + value + b"}"
    else:
        body = b'{"dry_run": true, "' + ("until" if field == "metadata" else field).encode() + (
            b'":' + number + b"}")
    r = runner.run(client.post(route, content=body))
    assert r.status_code < 500, (body, r.text)
    if number in (b"1e400", b"-1e999", BIG):
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
    for path in ("/v1/jobs", "/v1/events"):
        listed = runner.run(client.get(path))
        assert listed.status_code == 200, listed.text
        strict(listed.json())


# ---------------------------------------------------------------- the store's boundary


def _event(**fields: Any) -> events.Event:
    return events.generation_event(source="rendergrid", provider="rendergrid", job_id="j",
                                   status="completed", via="poll", raw={}, **fields)


@pytest.mark.parametrize(
    ("fields", "named"),
    [({"cost": math.nan}, "event.cost"), ({"cost": math.inf}, "event.cost"),
     ({"metadata": {"x": [1, -math.inf]}}, "event.metadata.x[1]")],
)
async def test_the_store_refuses_non_finite_floats(
    store: SqliteStore, fields: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
        await store.write_events([NewEvent(_event(**fields), b"{}", {}, ())])
    assert await store.count_events() == 0


async def test_the_store_refuses_a_job_with_nan_metadata(store: SqliteStore) -> None:
    job = Job("rendergrid", "j", "watching", {"a": math.nan}, 0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"metadata\.a"):
        await store.watch_job(job)
    assert await store.list_jobs() == []


async def test_rows_written_before_the_rule_still_read(tmp_path: Path) -> None:
    """Python's json wrote NaN into event_json and metadata_json; such rows read as null
    instead of making every page that holds them a 500."""
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        await store.write_events([NewEvent(_event(cost=0.5), b'{"cost": NaN}', {}, ())])
        await store.watch_job(
            Job("rendergrid", "j", "watching", {"a": 1}, 0.0, 1.0, 0.0))
    finally:
        await store.close()
    # SQL on purpose: rows as an older version wrote them, which no API writes any more.
    with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as db, db:
        db.execute("UPDATE events SET event_json = replace(event_json, '0.5', 'NaN')")
        db.execute("UPDATE jobs SET metadata_json = '{\"a\": Infinity}'")
    await store.open()
    try:
        [event] = await store.list_events(EventFilter())
        assert event["cost"] is None
        full = await store.get_event(event["id"])
        assert full is not None and full["raw"] == '{"cost": NaN}'  # not JSON: shown as text
        [job] = await store.list_jobs()
        assert job.metadata == {"a": None}
    finally:
        await store.close()


# ---------------------------------------------------------------- the CLI


def _config(tmp: Path) -> Path:
    path = tmp / "hookyard.toml"
    path.write_text(CONFIG.format(tmp=tmp, token=TOKEN, secret=RENDERGRID_SECRET))
    return path


@pytest.mark.parametrize(
    "argv",
    [["events", "list", "--limit", "²"], ["events", "list", "--limit", "9" * 5000],
     ["deliveries", "list", "--limit", "٣"], ["jobs", "list", "--limit", "1_0"],
     ["serve", "--port", "²"], ["jobs", "watch", "--source", "rendergrid", "--job-id", "j",
                                "--deadline-s", "nan"]],
)
def test_cli_numbers_are_ascii_and_in_range(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--config", str(_config(tmp_path))])
    assert exited.value.code == 2
    assert "must be a" in capsys.readouterr().err


@pytest.mark.parametrize("metadata", ['{"a": 1e400}', '{"a": NaN}', '{"a": "\\ud800"}'])
def test_cli_watch_refuses_metadata_json_cannot_carry(
    tmp_path: Path, metadata: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["jobs", "watch", "--config", str(_config(tmp_path)), "--source",
                     "rendergrid", "--job-id", "j1", "--metadata", metadata])
    assert code == 2
    assert "--metadata" in capsys.readouterr().err
    assert cli.main(["jobs", "list", "--config", str(_config(tmp_path))]) == 0
    assert "no watched jobs" in capsys.readouterr().out


def test_cli_deliveries_cursor_of_any_text_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for cursor in (_cursor(["²"]), _cursor(["9" * 30]), _cursor(["-1"])):
        code = cli.main(["deliveries", "list", "--config", str(_config(tmp_path)),
                         "--cursor", cursor])
        assert code in (1, 2)
        assert "cursor" in capsys.readouterr().err
