"""`hookyard events|deliveries|replay` against the SQLite file of a stopped server and of a
running one (the CLI opens the file directly; the running server's runners pick rows up)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from receiver import cli, replay
from tests.admin_kit import api, delivered_ids, post_jobs, statuses, write_config
from tests.fakes import FakeSink, Reply
from tests.support import Server, wait_for

RECHECK_S = 40  # a running server's idle runners re-check the store at least this often


@dataclass
class Stopped:
    config: Path
    tmp: Path
    sink: FakeSink
    completed: list[str]
    failed: list[str]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stopped]:
    """The database a stopped server left: 3 completed and 1 failed event, all delivered."""
    tmp = tmp_path_factory.mktemp("stopped")
    with FakeSink() as sink:
        config = write_config(tmp, sink.url)
        server = Server(config, tmp).start()
        try:
            completed = post_jobs(server, config, ["job-0", "job-1", "job-2"])
            failed = post_jobs(server, config, ["bad-0"], "failed")
            with api(server) as client:
                wait_for(lambda: statuses(client) == ["delivered"] * 7, what="deliveries")
        finally:
            server.stop()
        yield Stopped(config, tmp, sink, completed, failed)


@pytest.fixture
def stopped(template: Stopped, tmp_path: Path) -> Stopped:
    """A copy of the template's database, for one test to change."""
    for name in ("hookyard.db", "hookyard.db-wal", "hookyard.db-shm"):
        if (template.tmp / name).exists():
            shutil.copyfile(template.tmp / name, tmp_path / name)
    template.sink.clear()
    config = write_config(tmp_path, template.sink.url)
    return Stopped(config, tmp_path, template.sink, template.completed, template.failed)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_events_list_and_show(stopped: Stopped, capsys: pytest.CaptureFixture[str]) -> None:
    c = str(stopped.config)
    page = run_json(capsys, "events", "list", "--config", c)
    newest_first = [*reversed(stopped.failed), *reversed(stopped.completed)]
    assert [e["id"] for e in page["items"]] == newest_first and page["next_cursor"] is None
    failed = run_json(capsys, "events", "list", "--config", c, "--type", "generation.failed")
    assert [e["id"] for e in failed["items"]] == stopped.failed
    job = run_json(capsys, "events", "list", "--config", c, "--job-id", "job-1", "--since", "0")
    assert [e["id"] for e in job["items"]] == [stopped.completed[1]]
    first = run_json(capsys, "events", "list", "--config", c, "--limit", "3")
    rest = run_json(capsys, "events", "list", "--config", c, "--cursor", first["next_cursor"])
    assert [e["id"] for e in first["items"] + rest["items"]] == newest_first

    code, out, _ = run(capsys, "events", "list", "--config", c, "--limit", "2")
    assert code == 0 and newest_first[0] in out and "--cursor" in out

    shown = run_json(capsys, "events", "show", "--config", c, stopped.completed[0])
    assert shown["raw"]["id"] == "job-0"
    assert {d["sink"]: d["status"] for d in shown["deliveries"]} == {
        "hook": "delivered", "log": "delivered"}
    code, out, _ = run(capsys, "events", "show", "--config", c, stopped.completed[0])
    assert code == 0 and "hook" in out and "delivered" in out and "200" in out

    code, _, err = run(capsys, "events", "show", "--config", c, "evt_nope")
    assert code == 1 and "no event" in err
    code, _, err = run(capsys, "events", "list", "--config", c, "--since", "soon")
    assert code == 1 and "since" in err


def test_deliveries_list(stopped: Stopped, capsys: pytest.CaptureFixture[str]) -> None:
    c = str(stopped.config)
    everything = run_json(capsys, "deliveries", "list", "--config", c)["items"]
    assert len(everything) == 7
    hook = run_json(capsys, "deliveries", "list", "--config", c, "--sink", "hook")["items"]
    assert sorted(d["event_id"] for d in hook) == sorted(stopped.completed)
    assert run_json(capsys, "deliveries", "list", "--config", c, "--status", "dead")["items"] == []
    page = run_json(capsys, "deliveries", "list", "--config", c, "--limit", "5")
    rest = run_json(capsys, "deliveries", "list", "--config", c, "--cursor", page["next_cursor"])
    assert [d["id"] for d in page["items"] + rest["items"]] == [d["id"] for d in everything]
    code, out, _ = run(capsys, "deliveries", "list", "--config", c, "--status", "dead")
    assert code == 0 and "no deliveries match" in out


def test_replay_by_id_and_filter_on_a_stopped_server_is_sent_at_the_next_start(
    stopped: Stopped, capsys: pytest.CaptureFixture[str]
) -> None:
    c = str(stopped.config)
    one = run_json(capsys, "replay", "--config", c, stopped.completed[0])
    assert [d["sink"] for d in one["deliveries"]] == ["hook", "log"]
    to_log = run_json(capsys, "replay", "--config", c, stopped.completed[1], "--sink", "log")
    assert [d["sink"] for d in to_log["deliveries"]] == ["log"]
    dry = run_json(capsys, "replay", "--config", c, "--type", "generation.completed", "--dry-run")
    assert dry == {"dry_run": True, "events": 3, "deliveries": 6}
    done = run_json(capsys, "replay", "--config", c, "--job-id", "job-2")
    assert done == {"dry_run": False, "events": 1, "deliveries": 2}
    pending = run_json(capsys, "deliveries", "list", "--config", c, "--status", "pending")
    assert len(pending["items"]) == 5 and {d["cause"] for d in pending["items"]} == {"replay"}

    server = Server(stopped.config, stopped.tmp).start()
    try:
        wait_for(lambda: len(delivered_ids(stopped.sink)) == 2, what="replays sent")
        with api(server) as client:
            wait_for(lambda: "pending" not in statuses(client), what="all delivered")
    finally:
        server.kill()
    assert sorted(delivered_ids(stopped.sink)) == sorted([stopped.completed[0],
                                                          stopped.completed[2]])


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ((), "say what to replay"),
        (("evt_x", "--type", "generation.failed"), "takes only --sink"),
        (("--dead", "--status", "delivered"), "contradict"),
    ],
)
def test_replay_needs_a_clear_selection(
    stopped: Stopped, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], fragment: str
) -> None:
    code, _, err = run(capsys, "replay", "--config", str(stopped.config), *argv)
    assert code == 2 and fragment in err


def test_replay_errors_name_the_problem(
    stopped: Stopped, capsys: pytest.CaptureFixture[str]
) -> None:
    c = str(stopped.config)
    code, _, err = run(capsys, "replay", "--config", c, stopped.completed[0], "--sink", "nope")
    assert code == 1 and "nope" in err
    code, _, err = run(capsys, "replay", "--config", c, "evt_nope")
    assert code == 1 and "no event" in err
    code, _, err = run(capsys, "replay", "--config", c, "--all", "--until", "later")
    assert code == 1 and "until" in err


def test_bulk_replay_over_the_threshold_asks_first(
    stopped: Stopped, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = str(stopped.config)
    monkeypatch.setattr(cli, "CONFIRM_OVER", 3)
    monkeypatch.setattr(replay, "CHUNK", 2)  # several transactions, several progress lines
    code, out, err = run(capsys, "replay", "--config", c, "--all")
    assert code == 1 and "--yes" in err and "7 deliveries" in err and out == ""
    assert run_json(capsys, "deliveries", "list", "--config", c, "--status", "pending")[
        "items"] == []

    monkeypatch.setattr(sys, "stdin", _Terminal("n\n"))
    code, _, err = run(capsys, "replay", "--config", c, "--all")
    assert code == 1 and "[y/N]" in err and "nothing replayed" in err

    monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
    code, out, err = run(capsys, "replay", "--config", c, "--all")
    assert code == 0 and "replayed 7 deliveries of 4 events" in out
    assert err.count("deliveries queued") == 2  # 4 events, 2 per chunk

    code, out, err = run(capsys, "replay", "--config", c, "--all", "--yes", "--json")
    assert code == 0 and json.loads(out) == {"dry_run": False, "events": 4, "deliveries": 7}
    pending = run_json(capsys, "deliveries", "list", "--config", c, "--status", "pending",
                       "--limit", "500")
    assert len(pending["items"]) == 14


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_dead_deliveries_replayed_into_a_running_server_arrive_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeSink(Reply(500, "down")) as sink:
        config = write_config(tmp_path, sink.url)
        server = Server(config, tmp_path).start()
        try:
            events = post_jobs(server, config, ["job-0", "job-1"])
            with api(server) as client:
                wait_for(lambda: statuses(client, sink="hook") == ["dead"] * 2, what="dead")
                sink.clear()
                sink.default = Reply(200, "ok")
                done = run_json(capsys, "replay", "--config", str(config), "--dead")
                assert done == {"dry_run": False, "events": 2, "deliveries": 2}
                wait_for(lambda: len(delivered_ids(sink)) == 2, timeout=RECHECK_S,
                         what="replays sent by the running server")
                wait_for(lambda: statuses(client, sink="hook").count("delivered") == 2,
                         what="replays recorded")
                again = run_json(capsys, "replay", "--config", str(config), "--dead")
                assert again["deliveries"] == 0
        finally:
            server.kill()
    assert sorted(delivered_ids(sink)) == sorted(events)


def test_a_big_replay_without_a_terminal_refuses_then_runs_with_yes(tmp_path: Path) -> None:
    """The real command in a subprocess, stdin not a terminal, over the real threshold."""
    with FakeSink() as sink:
        config = write_config(tmp_path, sink.url)
        server = Server(config, tmp_path).start()
        try:
            events = post_jobs(server, config, [f"job-{i}" for i in range(cli.CONFIRM_OVER + 1)])
            with api(server) as client:
                wait_for(lambda: statuses(client, sink="hook").count("delivered") == len(events),
                         what="first deliveries")
                sink.clear()
                command = [sys.executable, "-m", "receiver.cli", "replay", "--config",
                           str(config), "--status", "delivered", "--sink", "hook"]
                refused = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                         text=True, timeout=60)
                assert refused.returncode == 1
                assert "--yes" in refused.stderr and "no terminal" in refused.stderr
                done = subprocess.run([*command, "--yes"], stdin=subprocess.DEVNULL,
                                      capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, done.stderr
                assert f"replayed {len(events)} deliveries" in done.stdout
                assert f"{len(events)}/{len(events)} deliveries queued" in done.stderr
                wait_for(lambda: len(delivered_ids(sink)) == len(events), timeout=RECHECK_S,
                         what="replays sent by the running server")
        finally:
            server.kill()
    assert sorted(delivered_ids(sink)) == sorted(events)
