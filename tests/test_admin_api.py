"""The admin API against a real `hookyard serve`: auth, filters, pagination, retry, replay."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.admin_kit import (
    api,
    delivered_ids,
    post_jobs,
    post_renderful,
    statuses,
    write_config,
)
from tests.fakes import FakeSink, Reply
from tests.support import Server, wait_for

ROUTES = [
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/events"),
    ("GET", "/v1/events/evt_nope"),
    ("POST", "/v1/events/evt_nope/replay"),
    ("POST", "/v1/replay"),
    ("GET", "/v1/deliveries"),
    ("POST", "/v1/deliveries/999999/retry"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("DELETE", "/v1/jobs/rendergrid/job-x"),
]
GUARDED = [r for r in ROUTES if r[1] != "/v1/openapi.json"]


@dataclass
class Stack:
    server: Server
    sink: FakeSink
    config: Path
    client: httpx.Client


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with FakeSink() as sink:
        config = write_config(tmp_path, sink.url)
        server = Server(config, tmp_path).start()
        try:
            with api(server) as client:
                yield Stack(server, sink, config, client)
        finally:
            server.kill()


@dataclass
class Dataset:
    stack: Stack
    completed: list[str]  # event ids, oldest first
    failed: list[str]
    renderful: str
    mid: float  # between the completed and the failed events


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dataset]:
    """One server with 8 completed and 4 failed Rendergrid events and one Renderful event."""
    tmp = tmp_path_factory.mktemp("admin")
    with FakeSink() as sink:
        config = write_config(tmp, sink.url)
        server = Server(config, tmp).start()
        try:
            completed = post_jobs(server, config, [f"job-{i}" for i in range(8)])
            time.sleep(0.05)
            mid = time.time()
            time.sleep(0.05)
            failed = post_jobs(server, config, [f"bad-{i}" for i in range(4)], "failed")
            renderful = post_renderful(server, config)
            with api(server) as client:
                wait_for(lambda: statuses(client).count("delivered") == 22, what="deliveries")
                stack = Stack(server, sink, config, client)
                yield Dataset(stack, completed, failed, renderful, mid)
        finally:
            server.kill()


def event_ids(client: httpx.Client, **query: object) -> list[str]:
    r = client.get("/v1/events", params={"limit": 500, **query})
    assert r.status_code == 200, r.text
    return [e["id"] for e in r.json()["items"]]


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_every_route_needs_the_right_token(data: Dataset, method: str, path: str) -> None:
    url = data.stack.server.url + path
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                    {"Authorization": "Basic " + "x" * 20}, {"Authorization": "Bearer"}):
        r = httpx.request(method, url, headers=headers, json={})
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    right = data.stack.client.request(method, path, json={"source": "nope", "job_id": "x"})
    assert right.status_code != 401
    assert right.status_code < 500


def test_openapi_document_needs_no_token(data: Dataset) -> None:
    r = httpx.get(f"{data.stack.server.url}/v1/openapi.json")
    assert r.status_code == 200
    assert r.json()["openapi"].startswith("3.")


def test_the_api_is_off_without_a_token(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", token=None)
    server = Server(config, tmp_path).start()
    try:
        for method, path in ROUTES:
            for token in (None, "any-token-at-all-0123"):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                r = httpx.request(method, server.url + path, headers=headers, json={})
                assert r.status_code == 404, (method, path, r.text)
                assert "admin_token" in r.json()["message"]
    finally:
        server.kill()


# -- events: filters, pagination, one event ----------------------------------------------------


def test_events_newest_first_and_each_filter(data: Dataset) -> None:
    c = data.stack.client
    everything = [data.renderful, *reversed(data.failed), *reversed(data.completed)]
    assert event_ids(c) == everything
    assert event_ids(c, source="renderful") == [data.renderful]
    assert event_ids(c, source="rendergrid") == everything[1:]
    assert event_ids(c, type="generation.failed") == list(reversed(data.failed))
    assert event_ids(c, job_id="job-3") == [data.completed[3]]
    assert event_ids(c, source="rendergrid", type="generation.completed", job_id="bad-1") == []
    iso = datetime.fromtimestamp(data.mid, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    later = [data.renderful, *reversed(data.failed)]
    for since in (iso, str(data.mid), iso.replace("Z", "+00:00"), iso.rstrip("Z")):
        assert event_ids(c, since=since) == later, since
    assert event_ids(c, until=iso) == list(reversed(data.completed))
    assert event_ids(c, since=iso, until=str(data.mid)) == []
    assert event_ids(c, since="2000-01-01", until="2100-01-01T00:00:00+05:00") == everything


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "-5"}, "since"),
        ({"until": "1e999"}, "until"),
        ({"source": ""}, "source"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "WyJhIiwgImIiXQ"}, "cursor"),  # a cursor of two parts
    ],
)
def test_bad_event_parameters_are_400_naming_them(
    data: Dataset, query: dict[str, str], named: str
) -> None:
    r = data.stack.client.get("/v1/events", params=query)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"
    assert named in r.json()["message"]


@pytest.mark.parametrize("limit", [1, 3, 5, 13, 500])
def test_event_pages_walk_everything_once(data: Dataset, limit: int) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        body = data.stack.client.get("/v1/events", params=params).json()
        assert len(body["items"]) <= limit
        seen += [e["id"] for e in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == event_ids(data.stack.client)
    assert len(set(seen)) == len(seen) == 13
    assert pages == -(-13 // limit)


def test_filtered_pages_keep_the_filter(data: Dataset) -> None:
    c = data.stack.client
    first = c.get("/v1/events", params={"type": "generation.failed", "limit": 3}).json()
    rest = c.get("/v1/events", params={"type": "generation.failed", "limit": 3,
                                       "cursor": first["next_cursor"]}).json()
    ids = [e["id"] for e in first["items"] + rest["items"]]
    assert ids == list(reversed(data.failed)) and rest["next_cursor"] is None


def test_list_items_have_no_raw_and_one_event_has_everything(data: Dataset) -> None:
    c = data.stack.client
    item = c.get("/v1/events", params={"job_id": "job-0"}).json()["items"][0]
    assert "raw" not in item and item["type"] == "generation.completed"
    event = c.get(f"/v1/events/{data.completed[0]}").json()
    assert event["raw"]["id"] == "job-0"
    assert {d["sink"] for d in event["deliveries"]} == {"hook", "log"}
    for d in event["deliveries"]:
        assert d["status"] == "delivered" and d["cause"] == "route" and d["replay_of"] is None
        assert [a["outcome"] for a in d["attempt_log"]] == ["delivered"]
    hook = next(d for d in event["deliveries"] if d["sink"] == "hook")
    assert hook["attempt_log"][0]["status_code"] == 200


@pytest.mark.parametrize("event_id", ["evt_nope", "%00", "evt_" + "Z" * 300, "ünïcode"])
def test_unknown_event_is_404(data: Dataset, event_id: str) -> None:
    for method, path in (("GET", ""), ("POST", "/replay")):
        r = data.stack.client.request(method, f"/v1/events/{event_id}{path}")
        assert r.status_code == 404, r.text
        assert r.json()["error"] == "not_found"


# -- deliveries --------------------------------------------------------------------------------


def test_deliveries_by_status_and_sink_and_pages(data: Dataset) -> None:
    c = data.stack.client
    everything = c.get("/v1/deliveries", params={"limit": 500}).json()["items"]
    assert len(everything) == 22
    assert [d["id"] for d in everything] == sorted(d["id"] for d in everything)
    hook = c.get("/v1/deliveries", params={"sink": "hook"}).json()["items"]
    assert len(hook) == 9 and {d["sink"] for d in hook} == {"hook"}
    assert c.get("/v1/deliveries", params={"status": "dead"}).json()["items"] == []
    assert len(c.get("/v1/deliveries", params={"status": "delivered", "sink": "log"})
               .json()["items"]) == 13
    assert c.get("/v1/deliveries", params={"sink": "gone"}).json()["items"] == []
    seen, cursor = [], None
    while True:
        body = c.get("/v1/deliveries", params={"limit": 4, **({"cursor": cursor} if cursor else {})}
                     ).json()
        seen += [d["id"] for d in body["items"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert seen == [d["id"] for d in everything]


@pytest.mark.parametrize(
    ("query", "named"),
    [({"status": "lost"}, "status"), ({"sink": ""}, "sink"), ({"limit": "-1"}, "limit"),
     ({"cursor": "WyJ4Il0"}, "cursor")],
)
def test_bad_delivery_parameters_are_400(data: Dataset, query: dict[str, str], named: str) -> None:
    r = data.stack.client.get("/v1/deliveries", params=query)
    assert r.status_code == 400 and named in r.json()["message"], r.text


def test_retry_puts_a_delivery_back_and_refuses_a_pending_one(stack: Stack) -> None:
    c = stack.client
    [event_id] = post_jobs(stack.server, stack.config, ["job-r"])
    wait_for(lambda: statuses(c) == ["delivered", "delivered"], what="first delivery")
    hook = next(d for d in c.get("/v1/deliveries").json()["items"] if d["sink"] == "hook")
    stack.sink.script(Reply(200, delay_s=1.0))  # keep the retry pending for a moment
    r = c.post(f"/v1/deliveries/{hook['id']}/retry")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "pending" and r.json()["attempts"] == 1
    again = c.post(f"/v1/deliveries/{hook['id']}/retry")
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    wait_for(lambda: len(delivered_ids(stack.sink)) == 2, what="the retry")
    assert delivered_ids(stack.sink) == [event_id, event_id]
    wait_for(lambda: statuses(c, sink="hook") == ["delivered"], what="delivered again")
    event = c.get(f"/v1/events/{event_id}").json()
    row = next(d for d in event["deliveries"] if d["sink"] == "hook")
    assert row["attempts"] == 2 and len(row["attempt_log"]) == 2
    for bad in ("999999", "0", "abc", "99999999999999999999999", "-1"):
        r = c.post(f"/v1/deliveries/{bad}/retry")
        assert r.status_code == 404, (bad, r.text)


# -- replay ----------------------------------------------------------------------------------


def test_replay_one_event_to_its_routes_and_to_named_sinks(stack: Stack) -> None:
    c = stack.client
    [event_id] = post_jobs(stack.server, stack.config, ["job-1"])
    wait_for(lambda: statuses(c) == ["delivered"] * 2, what="first delivery")
    r = c.post(f"/v1/events/{event_id}/replay")
    assert r.status_code == 202, r.text
    made = r.json()["deliveries"]
    assert r.json()["event_id"] == event_id and {d["sink"] for d in made} == {"hook", "log"}
    wait_for(lambda: len(delivered_ids(stack.sink)) == 2, what="the replay")
    assert delivered_ids(stack.sink) == [event_id, event_id]  # same webhook-id: dedupable
    only_log = c.post(f"/v1/events/{event_id}/replay", json={"sinks": ["log"]})
    assert only_log.status_code == 202
    assert [d["sink"] for d in only_log.json()["deliveries"]] == ["log"]
    wait_for(lambda: statuses(c).count("delivered") == 5, what="all delivered")
    rows = {d["id"]: d for d in c.get(f"/v1/events/{event_id}").json()["deliveries"]}
    first_log = min(i for i, d in rows.items() if d["sink"] == "log")
    for d in made:
        assert rows[d["id"]]["cause"] == "replay" and rows[d["id"]]["replay_of"] < d["id"]
    assert rows[only_log.json()["deliveries"][0]["id"]]["replay_of"] > first_log
    assert len(delivered_ids(stack.sink)) == 2


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"sinks": ["nope"]}, "nope"),
        ({"sinks": []}, "sinks"),
        ({"sinks": "hook"}, "sinks"),
        ({"sinks": [1]}, "sinks"),
        ({"sink": ["hook"]}, "sink"),
        ([1, 2], "JSON object"),
        ("not json", "JSON object"),
    ],
)
def test_bad_single_replays_are_400(data: Dataset, body: object, fragment: str) -> None:
    url = f"/v1/events/{data.completed[0]}/replay"
    c = data.stack.client
    r = c.post(url, content=body) if isinstance(body, str) else c.post(url, json=body)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["message"]


def test_replay_of_an_event_no_route_selects_needs_sinks(stack: Stack) -> None:
    # generation.failed goes only to `log`; name `hook` to send it there anyway.
    [event_id] = post_jobs(stack.server, stack.config, ["job-f"], "failed")
    r = stack.client.post(f"/v1/events/{event_id}/replay", json={"sinks": ["hook"]})
    assert r.status_code == 202
    wait_for(lambda: delivered_ids(stack.sink) == [event_id], what="replay to hook")


def test_bulk_replay_dry_run_filters_and_sinks(stack: Stack) -> None:
    c = stack.client
    done = post_jobs(stack.server, stack.config, [f"job-{i}" for i in range(5)])
    failed = post_jobs(stack.server, stack.config, ["bad-0", "bad-1"], "failed")
    wait_for(lambda: statuses(c).count("delivered") == 12, what="first deliveries")

    def replay(**body: object) -> dict[str, object]:
        r = c.post("/v1/replay", json=body)
        assert r.status_code == (200 if body.get("dry_run") else 202), r.text
        return dict(r.json())

    assert replay(dry_run=True) == {"dry_run": True, "events": 7, "deliveries": 12}
    assert replay(dry_run=True, type="generation.failed") == {
        "dry_run": True, "events": 2, "deliveries": 2}
    assert replay(dry_run=True, sinks=["hook"]) == {"dry_run": True, "events": 7,
                                                     "deliveries": 7}
    assert replay(dry_run=True, delivery_status="delivered", sinks=["hook"]) == {
        "dry_run": True, "events": 5, "deliveries": 5}
    assert replay(dry_run=True, delivery_status="dead") == {"dry_run": True, "events": 0,
                                                             "deliveries": 0}
    assert replay(dry_run=True, job_id="job-2", since=0, until="2100-01-01") == {
        "dry_run": True, "events": 1, "deliveries": 2}
    assert len(c.get("/v1/deliveries").json()["items"]) == 12  # dry runs write nothing

    assert replay(type="generation.completed", sinks=["hook"]) == {
        "dry_run": False, "events": 5, "deliveries": 5}
    wait_for(lambda: len(delivered_ids(stack.sink)) == 10, what="replayed to hook")
    assert sorted(delivered_ids(stack.sink)) == sorted(done * 2)
    assert replay(type="generation.failed") == {"dry_run": False, "events": 2, "deliveries": 2}
    wait_for(lambda: statuses(c).count("delivered") == 19, what="all delivered")
    log_rows = c.get("/v1/deliveries", params={"sink": "log", "limit": 100}).json()["items"]
    replayed = [d["event_id"] for d in log_rows if d["cause"] == "replay"]
    assert sorted(replayed) == sorted(failed)
    assert len(delivered_ids(stack.sink)) == 10  # failed events were not sent to hook


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"delivery_status": "lost"}, "delivery_status"),
        ({"delivery_state": "dead"}, "delivery_state"),
        ({"since": "last week"}, "since"),
        ({"until": True}, "until"),
        ({"since": 1e300}, "since"),
        ({"sinks": ["nope"]}, "nope"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"source": 5}, "source"),
    ],
)
def test_bad_bulk_replays_are_400(data: Dataset, body: dict[str, object], fragment: str) -> None:
    r = data.stack.client.post("/v1/replay", json=body)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["message"]


def test_bulk_replay_bodies_that_are_not_json_objects_are_400(data: Dataset) -> None:
    for raw in (b"", b"[]", b"{", b'{"since": NaN}', b'{"source": "\\ud800"}'):
        r = data.stack.client.post("/v1/replay", content=raw)
        assert r.status_code == 400, (raw, r.text)


def test_replay_after_an_outage_delivers_each_dead_event_exactly_once(stack: Stack) -> None:
    c = stack.client
    stack.sink.default = Reply(500, "down")
    events = post_jobs(stack.server, stack.config, [f"job-{i}" for i in range(3)])
    wait_for(lambda: statuses(c, sink="hook") == ["dead"] * 3, timeout=30, what="dead")
    assert len(delivered_ids(stack.sink)) == 6, c.get("/v1/deliveries").text  # max_attempts = 2
    stack.sink.clear()
    stack.sink.default = Reply(200, "ok")

    plan = c.post("/v1/replay", json={"delivery_status": "dead", "dry_run": True}).json()
    assert plan == {"dry_run": True, "events": 3, "deliveries": 3}
    r = c.post("/v1/replay", json={"delivery_status": "dead"})
    assert r.status_code == 202 and r.json()["deliveries"] == 3
    wait_for(lambda: statuses(c, sink="hook").count("delivered") == 3, what="replayed")
    # Only a pending row is ever sent (and it stays pending until answered): with none left,
    # the sink has had every request it will get.
    wait_for(lambda: "pending" not in statuses(c), what="no delivery left to send")
    assert sorted(delivered_ids(stack.sink)) == sorted(events)  # once each, same ids
    # The dead rows are history now: their pairs' latest rows are delivered.
    again = c.post("/v1/replay", json={"delivery_status": "dead"}).json()
    assert again == {"dry_run": False, "events": 0, "deliveries": 0}
    dead = c.get("/v1/deliveries", params={"status": "dead"}).json()["items"]
    replays = c.get("/v1/deliveries", params={"sink": "hook", "status": "delivered"}).json()
    assert sorted(d["replay_of"] for d in replays["items"]) == sorted(d["id"] for d in dead)


def test_bulk_replay_is_paced_by_the_sinks_rate_limit(tmp_path: Path) -> None:
    with FakeSink() as sink:
        config = write_config(tmp_path, sink.url, hook_extra="rate_per_s = 20")
        server = Server(config, tmp_path).start()
        try:
            with api(server) as c:
                events = post_jobs(server, config, [f"job-{i}" for i in range(30)])
                wait_for(lambda: statuses(c) == ["delivered"] * 60, what="first deliveries")
                sink.clear()
                r = c.post("/v1/replay", json={"delivery_status": "delivered", "sinks": ["hook"]})
                assert r.json() == {"dry_run": False, "events": 30, "deliveries": 30}
                wait_for(lambda: len(delivered_ids(sink)) == 30, what="replays")
        finally:
            server.kill()
    arrivals = [r.at for r in sink.requests]
    assert max(arrivals) - min(arrivals) >= 29 / 20 * 0.9  # one every 1/20 s, not a burst
    assert sorted(delivered_ids(sink)) == sorted(events)
