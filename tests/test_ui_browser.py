"""The web UI in a real browser: Debian's chromium driven by playwright, against a real
`hookyard serve` on 127.0.0.1 with an HTTP sink on a FakeSink and a fake Rendergrid API.

Screenshots of each page go to the test's tmp_path and, when HOOKYARD_UI_SCREENSHOTS=dir is
set, to that directory too (that is how docs/ui/*.png are made).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.admin_kit import TOKEN, creation, post, post_renderful, write_config
from tests.fake_providers import FakeRendergrid
from tests.fakes import FakeSink, FileServer, Reply
from tests.support import Server, delivery_counts, status_counts, wait_for

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium's own connections are refused by a closed
# network and it stalls; it must never download anything.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

@dataclass
class Stack:
    server: Server
    sink: FakeSink
    files: FileServer
    provider: FakeRendergrid
    config: Path
    tmp: Path


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with FakeSink() as sink, FileServer() as files, FakeRendergrid() as provider:
        config = write_config(tmp_path, sink.url, rendergrid_extra=(
            f'api_key = "{provider.api_key}"\nbase_url = "{provider.base_url}"'))
        server = Server(config, tmp_path).start()
        try:
            yield Stack(server, sink, files, provider, config, tmp_path)
        finally:
            server.kill()


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (CI's .ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Shots:
    def __init__(self, tmp: Path) -> None:
        self.dirs = [tmp / "screenshots"]
        if os.environ.get("HOOKYARD_UI_SCREENSHOTS"):
            self.dirs.append(Path(os.environ["HOOKYARD_UI_SCREENSHOTS"]))
        for folder in self.dirs:
            folder.mkdir(parents=True, exist_ok=True)

    def take(self, page: Page, name: str) -> None:
        for folder in self.dirs:
            page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def gradient_png(size: int = 160) -> bytes:
    """A small colourful PNG, so the screenshots show what a thumbnail looks like."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 255 // size, y * 255 // size, 160)) for x in range(size))
        for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def hook_requests(sink: FakeSink) -> list[str]:
    return [r.headers["webhook-id"] for r in sink.requests if r.path == "/hook"]


def delivery_count(tmp: Path) -> int:
    return sum(delivery_counts(tmp / "hookyard.db").values())


def tab_to(page: Page, selector: str, presses: int = 40) -> None:
    """Press Tab until `selector` has the focus, as a keyboard-only visitor would."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement === document.querySelector(s)", selector):
            return
    raise AssertionError(f"{selector} is not reached by Tab in {presses} presses")


def sign_in(page: Page, url: str) -> None:
    """By keyboard only: the token field has the focus; Enter sends the form."""
    page.goto(f"{url}/ui/events")
    expect(page).to_have_url(f"{url}/ui/login?next=%2Fui%2Fevents")
    page.keyboard.type(TOKEN)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Events")).to_be_visible()


def test_find_an_event_by_job_id_and_replay_it_to_one_sink(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    shots = Shots(tmp_path)
    image = stack.files.add("/out/0.png", gradient_png(), "image/png")
    ids = [post(stack.server, stack.config, creation(f"job-{n:03d}")) for n in range(5)]
    ids.append(post_renderful(stack.server, stack.config))
    wait_for(lambda: set(ids) <= set(hook_requests(stack.sink)), what="the first deliveries")
    stack.sink.script(Reply(500, "down"), Reply(500, "down"))  # one event's delivery dies
    dead_id = post(stack.server, stack.config, creation("job-dead"))
    wait_for(lambda: hook_requests(stack.sink).count(dead_id) == 2, what="the dead delivery")
    wanted = post(stack.server, stack.config, creation("job-wanted").replace(
        b'"https://cdn.example/job-wanted.jpg"', f'"{image}"'.encode()))
    wait_for(lambda: wanted in hook_requests(stack.sink), what="the first delivery")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    page.goto(f"{stack.server.url}/ui/events")
    shots.take(page, "login")
    sign_in(page, stack.server.url)
    page.get_by_label("Job id").fill("job-wanted")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#event-rows tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("hook: delivered")
    page.get_by_label("Job id").fill("")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(f"#row-{dead_id}")).to_contain_text("hook: dead")
    shots.take(page, "events")

    page.goto(f"{stack.server.url}/ui/events?job_id=job-wanted")
    tab_to(page, f"#row-{wanted} a")  # by keyboard: Tab to the row's link, Enter opens it
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="generation.completed")).to_be_visible()
    thumbnail = page.locator("img[alt='Output 1']")
    expect(thumbnail).to_have_attribute("src", image)
    thumbnail.scroll_into_view_if_needed()
    page.wait_for_function("document.querySelector(\"img[alt='Output 1']\").naturalWidth > 0")
    shots.take(page, "event")

    before = delivery_count(stack.tmp)
    tab_to(page, "#replay-sink")  # by keyboard: choose "hook only", Tab to Replay, Enter
    page.keyboard.press("ArrowDown")
    expect(page.get_by_label("Replay to")).to_have_value("hook")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Replay")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status").first).to_contain_text("Replay queued: 1 new deliveries")
    wait_for(lambda: hook_requests(stack.sink).count(wanted) == 2, what="the replayed delivery")
    assert delivery_count(stack.tmp) == before + 1  # to one sink: hook, not log
    page.reload()
    replayed = page.locator("tr.delivery", has_text="replay of")
    expect(replayed).to_contain_text("delivered")

    # Without the cookie, or with a wrong CSRF token, a state-changing request changes nothing.
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf and cookies
    replay_url = f"{stack.server.url}/ui/events/{wanted}/replay"
    with httpx.Client() as anonymous:
        assert anonymous.post(replay_url, data={"csrf": csrf, "sink": "hook"}).status_code == 403
    with httpx.Client(cookies=cookies) as signed:
        r = signed.post(replay_url, data={"csrf": "not-" + csrf, "sink": "hook"})
        assert r.status_code == 403
        assert delivery_count(stack.tmp) == before + 1
        # the same request with the right token does replay: the 403s were the checks
        r = signed.post(replay_url, data={"csrf": csrf, "sink": "hook"})
        assert r.status_code == 303
    assert delivery_count(stack.tmp) == before + 2
    wait_for(lambda: hook_requests(stack.sink).count(wanted) == 3, what="the control replay")


def test_live_events_sinks_dead_letters_and_jobs(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    shots = Shots(tmp_path)
    first = post(stack.server, stack.config, creation("job-first"))
    wait_for(lambda: first in hook_requests(stack.sink), what="the first delivery")
    stack.sink.script(Reply(503, "down"), Reply(503, "down"))
    dead_id = post(stack.server, stack.config, creation("job-dies"))
    wait_for(lambda: hook_requests(stack.sink).count(dead_id) == 2, what="the dead delivery")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    sign_in(page, stack.server.url)
    expect(page.locator("#live-status")).to_contain_text("Live")

    # A new event appears without a reload.
    fresh = post(stack.server, stack.config, creation("job-arrives-live"))
    expect(page.locator(f"#row-{fresh}")).to_be_visible()
    expect(page.locator("#event-rows tr").first).to_have_id(f"row-{fresh}")

    # An event stored after the page was rendered but before its script ran shows up too.
    late: list[str] = []

    def hold_script(route: Route) -> None:
        late.append(post(stack.server, stack.config, creation("job-before-script")))
        wait_for(lambda: "pending" not in status_counts(stack.tmp / "hookyard.db"),
                 what="the late event's deliveries")  # its rows change no more after this
        route.continue_()

    racing = browser.new_page()
    racing.context.add_cookies(page.context.cookies())
    racing.route("**/ui/static/ui.js", hold_script)
    served = racing.goto(f"{stack.server.url}/ui/events")
    assert served and late and f"row-{late[0]}" not in served.text()  # not in the page's HTML
    expect(racing.locator(f"#row-{late[0]}")).to_be_visible()
    racing.close()

    page.get_by_role("link", name="Sinks").click()
    hook = page.locator("tr", has=page.get_by_role("link", name="hook", exact=True))
    expect(hook).to_contain_text("closed")
    expect(hook).to_contain_text("✗ 1")  # dead in the last hour, with its symbol
    shots.take(page, "sinks")

    page.get_by_role("link", name="hook", exact=True).click()
    expect(page.get_by_role("link", name=dead_id)).to_be_visible()
    shots.take(page, "sink-dead-letters")
    page.get_by_role("link", name="Replay all dead…").click()
    expect(page.locator("main")).to_contain_text("adds 1 new deliveries")
    shots.take(page, "replay-dead")
    page.get_by_role("button", name="Replay 1 dead deliveries").click()
    expect(page.get_by_role("status").first).to_contain_text("1 new deliveries of dead letters")
    wait_for(lambda: hook_requests(stack.sink).count(dead_id) == 3, what="the dead letter's replay")

    stack.provider.set_job("job-watched", "running")
    page.get_by_role("link", name="Watched jobs").click()
    page.get_by_label("Source", exact=True).first.select_option("rendergrid")
    page.get_by_label("Job id").fill("job-watched")
    page.get_by_label("Deadline (seconds, optional)").fill("3600")
    page.get_by_role("button", name="Watch").click()
    expect(page.get_by_role("status").first).to_contain_text("Watching the job")
    job_row = page.locator("tr", has_text="job-watched")
    expect(job_row).to_contain_text("watching")
    shots.take(page, "jobs")

    # A phone-sized screen: rows become cards with labels, nothing needs colour to read.
    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone.context.add_cookies(page.context.cookies())
    phone.goto(f"{stack.server.url}/ui/events")
    expect(phone.locator(f"#row-{dead_id}")).to_contain_text("hook: delivered")  # replayed
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the events page is {width} px wide on a 390 px screen"
    shots.take(phone, "events-phone")
