"""The web UI without a browser: escaping, safe links, sessions, CSRF, headers, bad input,
and the store reads behind its pages (real SQLite files, the app in-process)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import html.parser
import json
import random
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver import settings as settings_mod
from receiver.app import Hookyard
from receiver.core.errors import StoreUnavailable
from receiver.core.events import Event, event_id_at, new_event_id
from receiver.store import EventFilter, Job, NewEvent
from receiver.store.sqlite import SqliteStore
from receiver.ui import pages, views
from receiver.ui.session import COOKIE, Sessions
from tests.admin_kit import TOKEN, write_config
from tests.support import app_client, signed_headers, stored_counts, wait_until

HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "' onmouseover='alert(1)",
    "javascript:alert(1)",
    "</textarea></pre><script>alert(2)</script>",
    "{{ 7*7 }}",
]


# -- kit ---------------------------------------------------------------------------------------


class Tags(html.parser.HTMLParser):
    """Every start tag with its attributes, to check what a page would make a browser do."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(text: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(text)
    return parser.tags


def assert_inert(text: str) -> None:
    """No script but ours, no event-handler attribute, every link and image http(s) or ours."""
    for tag, attrs in tags(text):
        if tag == "script":
            assert attrs.get("src") == "/ui/static/ui.js", attrs
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        for name in ("href", "src", "action"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("/ui/", "#", "https://", "http://")), (tag, name, value)


@contextlib.asynccontextmanager
async def signed_in(
    tmp: Path, base_url: str = "http://hookyard.test"
) -> AsyncIterator[tuple[httpx.AsyncClient, Hookyard, settings_mod.Settings]]:
    config = settings_mod.load(str(write_config(tmp, "http://127.0.0.1:9")))
    async with app_client(config) as (client, service):
        client.base_url = httpx.URL(base_url)
        r = await client.post("/ui/login", data={"token": TOKEN, "next": "/ui/events"})
        assert r.status_code == 303, r.text
        yield client, service, config


async def post_webhook(
    client: httpx.AsyncClient, config: settings_mod.Settings, payload: dict[str, Any]
) -> str:
    body = json.dumps(payload).encode()
    r = await client.post(
        "/hooks/rendergrid", content=body, headers=signed_headers(config, "rendergrid", body)
    )
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


def completed(job: str, outputs: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"event": "creation.completed", "id": job, "status": "completed",
            "result_urls": outputs if outputs is not None else [], "cost": 0.1, **extra}


def csrf_of(page: str) -> str:
    for tag, attrs in tags(page):
        if tag == "input" and attrs.get("name") == "csrf":
            return str(attrs["value"])
    raise AssertionError("no CSRF field on the page")


async def delivery_rows(tmp: Path) -> int:
    return (await stored_counts(tmp / "hookyard.db"))[1]


# -- escaping and safe URLs --------------------------------------------------------------------


async def test_hostile_payload_strings_render_as_text_on_every_page(tmp_path: Path) -> None:
    async with signed_in(tmp_path) as (client, _, config):
        ids = [
            await post_webhook(client, config, completed(
                f"job-{n}-{text}", [text, "https://cdn.example/ok.png"], note=text))
            for n, text in enumerate(HOSTILE)
        ]
        pages_seen = [await client.get("/ui/events")]
        pages_seen += [await client.get(f"/ui/events/{event_id}") for event_id in ids]
        pages_seen += [await client.get("/ui/events/rows"), await client.get("/ui/sinks")]
        for page in pages_seen:
            assert page.status_code == 200, page.text
            assert_inert(page.text)
            assert "<script>alert" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages_seen[1].text  # shown, as text
        assert "{{ 7*7 }}" in pages_seen[1 + HOSTILE.index("{{ 7*7 }}")].text  # not evaluated


async def test_javascript_and_data_outputs_are_never_links_or_images(tmp_path: Path) -> None:
    outputs = ["javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)",
               "data:image/png;base64,AAAA", "//evil.example/x.png", "/relative.png",
               "https://cdn.example/a b.png", "https://cdn.example/good.png"]
    async with signed_in(tmp_path) as (client, _, config):
        event_id = await post_webhook(client, config, completed("job-urls", outputs))
        page = (await client.get(f"/ui/events/{event_id}")).text
    images = [a["src"] for t, a in tags(page) if t == "img"]
    links = [a["href"] for t, a in tags(page) if t == "a"]
    assert images == ["https://cdn.example/good.png"]
    assert "https://cdn.example/good.png" in links
    assert not [x for x in links if x and ("javascript" in x.lower() or x.startswith("data:"))]
    assert page.count("shown as text only") == len(outputs) - 1


@given(st.text(max_size=80))
def test_safe_http_url_only_passes_plain_http_urls(text: str) -> None:
    url = views.safe_http_url(text)
    if url is not None:
        assert url == text
        assert url.lower().startswith(("http://", "https://"))
        assert not any(c in url for c in " \t\n\r\"'<>`\\")


@given(st.sampled_from(["http://", "https://", "HTTPS://"]),
       st.from_regex(r"[a-z]{1,12}\.[a-z]{2,4}", fullmatch=True))
def test_safe_http_url_keeps_real_urls(scheme: str, host: str) -> None:
    url = f"{scheme}{host}/out/0.png?x=1"
    assert views.safe_http_url(url) == url


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=1, max_size=60).filter(lambda s: s.strip()))
def test_rows_template_escapes_any_job_id_and_type(text: str) -> None:
    env = pages._environment()
    row = {"event": {"id": "evt_X", "type": text, "source": text, "job_id": text,
                     "received_at": "2026-11-22T10:00:59.000000Z"},
           "glance": views.glance({text: "dead", "log": "delivered"})}
    rendered = env.get_template("_event_rows.html").render(rows=[row])
    assert_inert(rendered)
    assert [t for t, _ in tags(rendered) if t not in ("tr", "td", "a", "span")] == []


# -- sessions and CSRF -------------------------------------------------------------------------


def test_session_cookie_round_trips_and_expires() -> None:
    now = [1_000_000.0]
    sessions = Sessions("token-a", lifetime_s=60, clock=lambda: now[0])
    session, cookie = sessions.new()
    assert sessions.read(cookie) == session
    now[0] += 59
    assert sessions.read(cookie) == session
    now[0] += 1
    assert sessions.read(cookie) is None


def test_session_cookie_stops_working_when_the_token_changes() -> None:
    _, cookie = Sessions("token-a").new()
    assert Sessions("token-a").read(cookie) is not None  # another process, same token
    assert Sessions("token-b").read(cookie) is None


@given(st.text(max_size=300))
def test_session_read_refuses_anything_it_did_not_sign(cookie: str) -> None:
    assert Sessions("token-a").read(cookie) is None


def test_session_cookie_cannot_be_extended() -> None:
    sessions = Sessions("token-a", lifetime_s=60)
    _, cookie = sessions.new()
    payload, mac = cookie.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data["exp"] += 10**6
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode()
    assert sessions.read(f"{forged.rstrip('=')}.{mac}") is None


def test_csrf_token_is_per_session() -> None:
    sessions = Sessions("token-a")
    one, _ = sessions.new()
    two, _ = sessions.new()
    assert sessions.csrf_ok(one, sessions.csrf_token(one))
    assert not sessions.csrf_ok(one, sessions.csrf_token(two))
    assert not sessions.csrf_ok(one, None)
    assert not sessions.csrf_ok(one, "é" + sessions.csrf_token(one))


async def test_pages_need_a_session_and_forms_need_the_csrf_token(tmp_path: Path) -> None:
    async with signed_in(tmp_path) as (client, _, config):
        event_id = await post_webhook(client, config, completed("job-csrf"))
        page = await client.get(f"/ui/events/{event_id}")
        token = csrf_of(page.text)
        cookie = client.cookies[COOKIE]
        before = await delivery_rows(tmp_path)
        replay = f"/ui/events/{event_id}/replay"

        client.cookies.clear()
        r = await client.get(f"/ui/events/{event_id}")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=")
        assert (await client.post(replay, data={"csrf": token, "sink": ""})).status_code == 403
        assert (await client.get("/ui/events/rows")).status_code == 303

        client.cookies.set(COOKIE, cookie, path="/ui")
        assert (await client.post(replay, data={"csrf": "wrong", "sink": ""})).status_code == 403
        assert (await client.post(replay, data={"sink": ""})).status_code == 403
        r = await client.post(replay, data={"csrf": token, "sink": ""},
                              headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        r = await client.post(replay, data={"csrf": token, "sink": ""},
                              headers={"Referer": "https://evil.example/page"})
        assert r.status_code == 403
        r = await client.post(replay, data={"csrf": token, "sink": ""},
                              headers={"Origin": "null"})
        assert r.status_code == 403
        assert await delivery_rows(tmp_path) == before  # nothing changed

        r = await client.post(replay, data={"csrf": token, "sink": "hook"},
                              headers={"Origin": "http://hookyard.test"})
        assert r.status_code == 303, r.text
        assert await delivery_rows(tmp_path) == before + 1
        # behind a proxy that rewrites Host, the browser's host arrives as X-Forwarded-Host
        r = await client.post(replay, data={"csrf": token, "sink": "hook"},
                              headers={"Host": "127.0.0.1:8000",
                                       "X-Forwarded-Host": "hooks.example.com",
                                       "Origin": "https://hooks.example.com"})
        assert r.status_code == 303, r.text
        assert await delivery_rows(tmp_path) == before + 2


async def test_sign_in_with_a_wrong_token_is_401_and_sets_no_cookie(tmp_path: Path) -> None:
    config = settings_mod.load(str(write_config(tmp_path, "http://127.0.0.1:9")))
    async with app_client(config) as (client, _):
        r = await client.post("/ui/login", data={"token": TOKEN + "x", "next": "/ui/events"})
        assert r.status_code == 401
        assert COOKIE not in r.cookies
        assert TOKEN not in r.text
        r = await client.post("/ui/login", data={"token": TOKEN},
                              headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and COOKIE not in r.cookies


async def test_session_cookie_flags(tmp_path: Path) -> None:
    config = settings_mod.load(str(write_config(tmp_path, "http://127.0.0.1:9")))
    async with app_client(config) as (client, _):
        for base, secure in (("http://hookyard.test", False), ("https://hookyard.test", True)):
            client.base_url = httpx.URL(base)
            r = await client.post("/ui/login", data={"token": TOKEN})
            header = r.headers["set-cookie"].lower()
            assert "httponly" in header and "samesite=strict" in header and "max-age=" in header
            assert "path=/ui" in header
            assert ("secure" in header.split("; ")) is secure


async def test_sign_in_goes_back_only_to_a_ui_page(tmp_path: Path) -> None:
    config = settings_mod.load(str(write_config(tmp_path, "http://127.0.0.1:9")))
    async with app_client(config) as (client, _):
        for target, expected in [("/ui/sinks", "/ui/sinks"), ("//evil.example/", "/ui/events"),
                                 ("https://evil.example/ui/", "/ui/events"),
                                 ("/ui//evil.example", "/ui/events"),
                                 ("/ui/\\evil.example", "/ui/events")]:
            client.cookies.clear()
            r = await client.post("/ui/login", data={"token": TOKEN, "next": target})
            assert r.headers["location"] == expected


async def test_sign_out_clears_the_cookie(tmp_path: Path) -> None:
    async with signed_in(tmp_path) as (client, _, _config):
        token = csrf_of((await client.get("/ui/events")).text)
        r = await client.post("/ui/logout", data={"csrf": token})
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
        assert (await client.get("/ui/events")).status_code == 303


async def test_ui_is_off_without_an_admin_token(tmp_path: Path) -> None:
    config = settings_mod.load(str(write_config(tmp_path, "http://127.0.0.1:9", token=None)))
    async with app_client(config) as (client, _):
        for method, path in [("GET", "/ui"), ("GET", "/ui/login"), ("POST", "/ui/login"),
                             ("GET", "/ui/events"), ("GET", "/ui/static/ui.js")]:
            r = await client.request(method, path, data={"token": ""})
            assert r.status_code == 404, (method, path)
            assert "server.admin_token" in r.text


async def test_security_headers_on_pages_and_static_files(tmp_path: Path) -> None:
    async with signed_in(tmp_path) as (client, _, _config):
        for path in ["/ui/login", "/ui/events", "/ui/sinks", "/ui/jobs", "/ui/static/ui.css"]:
            r = await client.get(path)
            assert r.status_code in (200, 303), path  # signed in, /ui/login sends you on
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert "frame-ancestors 'none'" in csp
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["x-content-type-options"] == "nosniff"
            expected = "no-cache" if "/static/" in path else "no-store"
            assert r.headers["cache-control"] == expected


async def test_no_secret_is_rendered(tmp_path: Path) -> None:
    async with signed_in(tmp_path) as (client, _, config):
        await post_webhook(client, config, completed("job-secret"))
        texts = [(await client.get(p)).text for p in ["/ui/events", "/ui/sinks", "/ui/jobs",
                                                       "/ui/sinks/hook", "/ui/login"]]
    for text in texts:
        assert TOKEN not in text
        assert "127.0.0.1:9" not in text  # sink URLs stay in the config


# -- bad input ---------------------------------------------------------------------------------


async def test_bad_form_bodies_are_4xx(tmp_path: Path) -> None:
    async with signed_in(tmp_path) as (client, _, config):
        event_id = await post_webhook(client, config, completed("job-form"))
        token = csrf_of((await client.get(f"/ui/events/{event_id}")).text)
        replay = f"/ui/events/{event_id}/replay"
        ctype = {"Content-Type": "application/x-www-form-urlencoded"}
        r = await client.post(replay, content=b"csrf=" + b"a" * 20_000, headers=ctype)
        assert r.status_code == 413
        r = await client.post(replay, json={"csrf": token})
        assert r.status_code == 415
        r = await client.post(replay, content=b"csrf=\xff\xfe", headers=ctype)
        assert r.status_code == 400
        r = await client.post(replay, data={"csrf": token, "sink": "nope"})
        assert r.status_code == 400 and "no sink named" in r.text
        r = await client.post("/ui/events/evt_nope/replay", data={"csrf": token})
        assert r.status_code == 404
        for raw in ["999999", "0", "abc", "9" * 40]:
            r = await client.post(f"/ui/deliveries/{raw}/retry", data={"csrf": token})
            assert r.status_code == 404, raw
        r = await client.post("/ui/jobs", data={"csrf": token, "source": "rendergrid",
                                                "job_id": "j", "deadline_s": "-5"})
        assert r.status_code == 400 and "deadline" in r.text.lower()
        r = await client.post("/ui/jobs", data={"csrf": token, "source": "nope", "job_id": "j"})
        assert r.status_code == 400


async def test_numbers_in_ui_urls_and_forms_are_ascii_digits_or_4xx(tmp_path: Path) -> None:
    """`²` and `٣` are digits to str.isdigit() and int() refuses or misreads them: every number
    the UI reads from a URL or a form goes through the one integer parser (receiver.core.jsonx)."""
    async with signed_in(tmp_path) as (client, _, _config):
        token = csrf_of((await client.get("/ui/jobs")).text)
        for raw in ["²", "٣", "1²", "9" * 5000]:
            r = await client.post(f"/ui/deliveries/{quote(raw)}/retry", data={"csrf": token})
            assert r.status_code == 404, (raw, r.status_code)
            r = await client.get("/ui/sinks/hook", params={"after": raw})
            assert r.status_code == 400 and "after" in r.text, (raw, r.status_code)
            r = await client.get("/ui/events", params={"done": "replay", "n": raw})
            assert r.status_code == 200 and "Replay queued: some new" in r.text, raw
        for deadline in ["٣", "nan", "1e2", "inf", "3²"]:
            r = await client.post("/ui/jobs", data={"csrf": token, "source": "rendergrid",
                                                    "job_id": "j-digits", "deadline_s": deadline})
            assert r.status_code == 400 and "deadline" in r.text.lower(), (deadline, r.text)


QUERY_KEYS = ["source", "type", "job_id", "since", "until", "before", "after", "state"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(query=st.dictionaries(st.sampled_from(QUERY_KEYS), st.text(max_size=40), max_size=4),
       path=st.sampled_from(["/ui/events", "/ui/events/rows", "/ui/jobs", "/ui/sinks/hook"]))
async def test_any_query_is_answered_without_a_500(tmp_path: Path, query: dict[str, str],
                                                   path: str) -> None:
    async with signed_in(tmp_path) as (client, _, _config):
        r = await client.get(path, params=query)
    assert r.status_code in (200, 400, 404), (path, query, r.text[-500:])
    assert_inert(r.text)


async def test_unknown_event_sink_and_delivery_are_404_pages(tmp_path: Path) -> None:
    async with signed_in(tmp_path) as (client, _, _config):
        for path in ["/ui/events/evt_nope", "/ui/sinks/nope", "/ui/sinks/nope/replay-dead"]:
            r = await client.get(path)
            assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")


# -- what the pages show -----------------------------------------------------------------------


async def test_events_are_found_by_job_id_without_a_source(tmp_path: Path) -> None:
    async with signed_in(tmp_path) as (client, _, config):
        wanted = await post_webhook(client, config, completed("job-wanted"))
        await post_webhook(client, config, completed("job-other"))
        page = (await client.get("/ui/events", params={"job_id": "job-wanted"})).text
    assert f"row-{wanted}" in page
    assert "job-other" not in page


async def test_until_filter_keeps_only_events_before_it(tmp_path: Path) -> None:
    async with signed_in(tmp_path) as (client, _, config):
        first = await post_webhook(client, config, completed("job-early"))
        await asyncio.sleep(0.01)
        cut = time.time()
        await asyncio.sleep(0.01)
        await post_webhook(client, config, completed("job-late"))
        page = (await client.get("/ui/events", params={"until": f"{cut:.6f}"})).text
    assert f"row-{first}" in page
    assert "job-late" not in page


@given(st.integers(min_value=1_600_000_000_000, max_value=4_000_000_000_000))
def test_until_id_bound_never_cuts_an_event_received_before_it(ms: int) -> None:
    received = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}000Z"
    bound = event_id_at(received, 1)
    assert bound is not None
    assert new_event_id(ms) < bound  # made at the same moment: kept
    assert new_event_id(ms + 2) >= bound  # made after the slack: cut by the id alone


async def test_event_page_shows_deliveries_attempts_and_glance(tmp_path: Path) -> None:
    async with signed_in(tmp_path) as (client, service, config):
        event_id = await post_webhook(client, config, completed("job-show",
                                                                ["https://cdn.example/0.png"]))
        async def final() -> bool:
            event = await service.store.get_event(event_id)
            assert event is not None
            return all(d["status"] != "pending" for d in event["deliveries"])

        # The hook sink at 127.0.0.1:9 refuses: wait for its dead row.
        await wait_until(final, timeout=10, what="the hook sink's dead row")
        page = (await client.get(f"/ui/events/{event_id}")).text
        rows = (await client.get("/ui/events")).text
    assert "✗</span> dead" in page and "Connect" in page
    assert "✓</span> delivered" in page
    assert "2 attempts of delivery" in page
    assert "hook: dead" in rows and "log: delivered" in rows


# -- store reads behind the pages --------------------------------------------------------------


def sink_row(page: str, sink: str) -> dict[str, str]:
    """The sinks page's cells for `sink`, by column label, as text."""
    row = re.search(rf'<tr>\s*<td data-label="Sink"><a href="/ui/sinks/{sink}">.*?</tr>', page,
                    re.DOTALL)
    assert row is not None, page
    return {label: re.sub(r"<[^>]+>", "", cell).strip()
            for label, cell in re.findall(r'<td data-label="([^"]+)">(.*?)</td>', row.group(0),
                                          re.DOTALL)}


async def test_sinks_page_shows_pending_oldest_and_each_breaker_state(tmp_path: Path) -> None:
    async with signed_in(tmp_path) as (client, service, config):
        breaker = service.delivery.runners["hook"].breaker
        breaker.open_until = breaker.clock() + 150  # open: the hook sink starts no send
        await post_webhook(client, config, completed("job-sinks-page"))
        cells = sink_row((await client.get("/ui/sinks")).text, "hook")
        assert cells["Pending"] == "1"
        assert re.fullmatch(r"\d+ s", cells["Oldest pending"]), cells
        assert cells["Circuit breaker"].startswith("open: paused, next probe in 2 min"), cells
        breaker.probing = True
        cells = sink_row((await client.get("/ui/sinks")).text, "hook")
        assert cells["Circuit breaker"] == "half-open: one probe under way"
        breaker.open_until, breaker.probing, breaker.failures = None, False, 3
        cells = sink_row((await client.get("/ui/sinks")).text, "hook")
        assert cells["Circuit breaker"] == "closed (3 failures in a row)"
        assert sink_row((await client.get("/ui/sinks")).text, "log")["Oldest pending"] in (
            "—", "0 s")  # the log sink delivers at once


async def test_sink_stats_counts_recent_outcomes_and_caps_pending(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        now = time.time()
        with sqlite3.connect(tmp_path / "s.db") as db:  # rows of given ages: no API sets them
            db.execute("INSERT INTO events (id, idempotency_key, type, source, provider, via,"
                       " received_at, event_json, raw_body, headers_json) VALUES"
                       " ('e1', 'k1', 't', 's', 'p', 'webhook', 'x', '{}', x'', '{}')")
            rows = [("a", "delivered", now - 7200), ("a", "delivered", now - 60),
                    ("a", "dead", now - 30), ("b", "delivered", now - 10),
                    ("a", "pending", now - 500), ("a", "pending", now - 5),
                    ("a", "pending", now - 1)]
            for sink, status, at in rows:
                cur = db.execute("INSERT INTO deliveries (event_id, sink, status, next_attempt_at,"
                                 " created_at, updated_at) VALUES ('e1', ?, ?, ?, ?, ?)",
                                 (sink, status, at, at, at))
                if status != "pending":
                    db.execute("INSERT INTO attempts (delivery_id, started_at, duration_ms,"
                               " outcome) VALUES (?, ?, 5, ?)", (cur.lastrowid, at, status))
        stats = await store.sink_stats(["a", "b", "c"], now - 3600, cap=100)
        assert (stats["a"].delivered, stats["a"].dead, stats["a"].pending) == (1, 1, 3)
        assert stats["a"].oldest_pending_at == pytest.approx(now - 500)
        b = stats["b"]
        assert (b.delivered, b.pending, b.oldest_pending_at) == (1, 0, None)
        assert stats["c"].delivered == 0 and stats["a"].exact
        capped = await store.sink_stats(["a", "b"], now - 3600, cap=2)
        assert capped["a"].pending == 2  # 3 pending: "at least 2"
        # 3 attempts in the hour, only the newest 2 read: lower bounds, and said so
        assert capped["a"].exact is False
        assert (capped["a"].delivered, capped["a"].dead, capped["b"].delivered) == (0, 1, 1)
        assert (await store.sink_stats(["a"], now + 10, cap=100))["a"].delivered == 0
    finally:
        await store.close()


async def test_event_reads_are_planned_on_their_indexes(tmp_path: Path) -> None:
    """list_events as SQLite plans it on the store's schema: a job id through its key range
    and events_job_other (receiver.store.sql.job_access), not by walking events (source, id)
    over all of a source's events to skip a sort of a few rows (which SQLite prefers without
    statistics: 143 ms per search at 200,000 events in bench/ui); a source alone through
    events (source, id), without a sort."""
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:

        def plan(where: EventFilter, before: str | None) -> str:
            sql, params = SqliteStore.SQL.events_page(where, before, 51)
            return str(db.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall())

        for before in (None, "evt_7ZZZ"):  # the first page, and a later one or `until`
            by_job = plan(EventFilter(source="rendergrid", job_id="job-1"), before)
            # a job's events: its key range, or the partial index of the other keyed events
            assert "MULTI-INDEX OR" in by_job, by_job
            assert "INDEX sqlite_autoindex_events_2 (idempotency_key>? AND idempotency_key<?)" \
                in by_job, by_job
            assert "INDEX events_job_other (source=? AND job_id=?)" in by_job, by_job
            by_source = plan(EventFilter(source="rendergrid"), before)
            assert "INDEX events_source (source=?" in by_source, by_source
            assert "TEMP B-TREE" not in by_source


async def test_latest_statuses_takes_the_newest_delivery_of_each_sink(tmp_path: Path) -> None:
    async with signed_in(tmp_path) as (client, service, config):
        event_id = await post_webhook(client, config, completed("job-latest"))
        ids = await service.store.add_replays([(event_id, "hook")], time.time())
        statuses = await service.store.latest_statuses([event_id, "evt_none"])
        event = await service.store.get_event(event_id)
    assert event is not None
    newest = {d["sink"]: d["status"] for d in event["deliveries"] if d["id"] in ids}
    assert statuses[event_id]["hook"] == newest["hook"]
    assert "evt_none" not in statuses


async def test_event_filters_by_time_answer_what_received_at_says(tmp_path: Path) -> None:
    """The store bounds `since` and `until` by the event id as well (received_at has no
    index), and the UI looks a job id up per source: for 600 random filters both must answer
    exactly the events a plain reading of received_at selects, newest first, including
    events whose id was made a little before or after their received_at."""
    rng = random.Random(2)
    async with signed_in(tmp_path) as (_, service, _config):
        store = service.store
        await store.write_events(sample_events(random.Random(1)))
        ui = pages.Ui(service, TOKEN)
        every = await store.list_events(EventFilter(), None, 1000)
        assert len(every) == 150
        times = [e["received_at"] for e in every]
        for _ in range(600):
            where = EventFilter(
                source=rng.choice([None, "rendergrid", "renderful"]),
                type=rng.choice([None, None, "generation.completed"]),
                job_id=rng.choice([None, None, None, "job-3", "job-40"]),
                since=rng.choice([None, *times[::11]]),
                until=rng.choice([None, None, *times[::13]]),
            )
            limit = rng.choice([1, 5, 30, 200])
            expected = [e["id"] for e in every if _selects(where, e)][:limit]
            assert [e["id"] for e in await store.list_events(where, None, limit)] == expected
            assert [e["id"] for e in await ui.event_page(where, None, limit)] == expected


def _selects(where: EventFilter, event: dict[str, Any]) -> bool:
    return (
        all(getattr(where, k) in (None, event[k]) for k in ("source", "type", "job_id"))
        and (where.since is None or event["received_at"] >= where.since)
        and (where.until is None or event["received_at"] < where.until)
    )


def sample_events(rng: random.Random) -> list[NewEvent]:
    """150 events over two sources, a few seconds apart, the rarer source clustered."""
    start = int(time.time() * 1000) - 3_600_000
    items = []
    for n in range(150):
        ms = start + n * 7_000 + rng.randrange(0, 5)
        source = "renderful" if (n // 30) % 2 and rng.random() < 0.7 else "rendergrid"
        skew_ms = rng.choice([0, 0, 0, -9 * 60_000, 9 * 60_000, rng.randrange(-60_000, 60_000)])
        event = Event(
            id=new_event_id(ms + skew_ms),
            type="generation.completed" if n % 3 else "generation.failed",
            source=source, provider=source, job_id=f"job-{n % 50}",
            status="completed" if n % 3 else "failed",
            idempotency_key=f"{source}:{n}", received_at=pages_iso(ms),
        )
        items.append(NewEvent(event, b"{}", {}, ()))
    return items


def pages_iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}000Z"


async def wait_settled(service: Hookyard, event_id: str, attempts: int) -> dict[str, Any]:
    """The hook delivery once it is not pending and has made `attempts` attempts."""
    for _ in range(400):
        event = await service.store.get_event(event_id)
        assert event is not None
        hook = next(d for d in event["deliveries"] if d["sink"] == "hook")
        if hook["status"] != "pending" and len(hook["attempt_log"]) >= attempts:
            return dict(hook)
        await asyncio.sleep(0.05)
    raise AssertionError(f"the hook delivery of {event_id} did not settle")


async def test_retry_button_sends_a_dead_delivery_again(tmp_path: Path) -> None:
    async with signed_in(tmp_path) as (client, service, config):
        event_id = await post_webhook(client, config, completed("job-retry"))
        hook = await wait_settled(service, event_id, 2)  # 127.0.0.1:9 refuses: dead after 2
        assert hook["status"] == "dead"
        page = (await client.get(f"/ui/events/{event_id}")).text
        assert f'action="/ui/deliveries/{hook["id"]}/retry"' in page
        r = await client.post(f"/ui/deliveries/{hook['id']}/retry", data={"csrf": csrf_of(page)})
        assert r.status_code == 303
        assert r.headers["location"] == f"/ui/events/{event_id}?done=retry#deliveries"
        again = await wait_settled(service, event_id, 3)
        assert again["id"] == hook["id"] and len(again["attempt_log"]) == 3
        shown = (await client.get(r.headers["location"])).text
        assert "Retry queued" in shown and "3 attempts of delivery" in shown


async def test_replay_to_all_routed_sinks_adds_a_delivery_per_routed_sink(tmp_path: Path) -> None:
    async with signed_in(tmp_path) as (client, service, config):
        event_id = await post_webhook(client, config, completed("job-replay-all"))
        page = (await client.get(f"/ui/events/{event_id}")).text
        assert "all routed sinks (hook, log)" in page
        r = await client.post(f"/ui/events/{event_id}/replay",
                              data={"csrf": csrf_of(page), "sink": ""})
        assert r.status_code == 303
        assert r.headers["location"] == f"/ui/events/{event_id}?done=replay&n=2#deliveries"
        event = await service.store.get_event(event_id)
    assert event is not None
    replays = sorted(d["sink"] for d in event["deliveries"] if d["cause"] == "replay")
    assert replays == ["hook", "log"]


async def test_jobs_page_shows_state_polls_next_poll_deadline_and_last_status(
    tmp_path: Path,
) -> None:
    async with signed_in(tmp_path) as (client, service, _config):
        now = time.time()
        job = Job("rendergrid", "job-polled", "watching", {}, now, now + 7200, now + 600)
        await service.store.watch_job(job)
        await service.store.save_jobs([dataclasses.replace(job, polls=4,
                                                           last_status="in_progress")])
        page = (await client.get("/ui/jobs")).text
    row = page[page.index("job-polled"):]
    row = row[:row.index("</tr>")]
    assert ">watching</span>" in row and '"Polls">4</td>' in row
    assert "in 10 min" in row and views.utc(now + 7200) in row and "in_progress" in row


async def test_store_outage_is_a_503_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with signed_in(tmp_path) as (client, service, _config):
        async def locked(*_: object) -> list[dict[str, Any]]:
            raise StoreUnavailable("the SQLite store failed: database is locked")

        monkeypatch.setattr(service.store, "list_events", locked)
        r = await client.get("/ui/events")
    assert r.status_code == 503
    assert "store does not answer" in r.text and r.headers["content-type"].startswith("text/html")


async def test_event_page_copes_with_sparse_rows_and_huge_payloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "MAX_SHOWN_CHARS", 1000)
    async with signed_in(tmp_path) as (client, _, config):
        big = await post_webhook(client, config, completed("job-big", note="x" * 5000))
        with sqlite3.connect(tmp_path / "hookyard.db") as db:  # as an older version wrote it
            db.execute("INSERT INTO events (id, idempotency_key, type, source, provider, via,"
                       " received_at, event_json, raw_body, headers_json) VALUES (?, 'k', 't',"
                       " 's', 'p', 'webhook', 'x', ?, x'6e6f74206a736f6e', '{}')",
                       ("evt_sparse", json.dumps({"id": "evt_sparse", "type": "t",
                                                  "source": "s"})))
        sparse = await client.get("/ui/events/evt_sparse")
        cut = await client.get(f"/ui/events/{big}")
    assert sparse.status_code == 200 and "not json" in sparse.text
    assert cut.status_code == 200
    assert "more characters (GET /v1/events/{id} has all)" in cut.text
    assert "x" * 5000 not in cut.text


async def test_event_page_shows_the_mirrored_copy_where_one_exists(tmp_path: Path) -> None:
    """The provider's URL may have expired: the thumbnail is the mirrored copy, linked by the
    s3 sink that holds it; an output without a copy keeps the provider's URL."""
    from receiver.core.outputs import MirroredOutput
    from receiver.store import Outcome

    class MirrorSink:
        async def link(self, bucket: str, key: str) -> str:
            return f"https://cdn.example/{bucket}/{key}"

    class Runner:
        sink = MirrorSink()

        def nudge(self) -> None:  # the change follower nudges every runner
            pass

        def wake(self) -> None:
            pass

    async with signed_in(tmp_path) as (client, service, config):
        event_id = await post_webhook(client, config, completed(
            "job-mirrored", ["https://provider.example/a.png", "https://provider.example/b.png"]))
        [row] = (await service.store.get_event(event_id) or {})["deliveries"][:1]
        now = time.time()
        await service.store.record_outcomes([Outcome(
            row["id"], "archive", "delivered", 1, now, now, 0.1, 200,
            mirrored=(MirroredOutput(0, "renders", "outputs/a.png", "image/png"),))])
        service.delivery.runners["archive"] = Runner()  # type: ignore[assignment]
        try:
            page = (await client.get(f"/ui/events/{event_id}")).text
        finally:
            del service.delivery.runners["archive"]  # a stand-in: not one to drain at stop
    assert 'src="https://cdn.example/renders/outputs/a.png"' in page
    assert 'src="https://provider.example/b.png"' in page  # no copy: the original
    assert "(shown: the mirrored copy)" in page
