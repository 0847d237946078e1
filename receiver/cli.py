"""The `hookyard` command: serve, check, sign, jobs, events, deliveries, replay.

The verbs that read or replay open the configured SQLite file directly, so they work whether
the server is stopped or running; a running server's sink runners pick up replayed rows at
their next idle re-check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from handlers.sinks import SINK_SPECS
from receiver import __version__, logs, poller, replay, settings
from receiver.core import jsonx, masking, signing
from receiver.core.errors import ConfigError, RequestError
from receiver.openapi import MAX_DEADLINE_S, MAX_PAGE
from receiver.progress import Progress
from receiver.router import Router
from receiver.store import (
    DELIVERY_STATUSES,
    JOB_STATES,
    Pruned,
    Store,
    StoreUnusable,
    check_store,
    display_url,
    open_store,
)

Command = Callable[[argparse.Namespace], int]
T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command: Command = args.command
    try:
        return command(args)
    except ConfigError as exc:
        _say(*f"hookyard: {exc.message}".split("\n"), file=sys.stderr)
        return 2
    except RequestError as exc:  # a bad filter, an unknown event or sink
        _say(*f"hookyard: {exc.message}".split("\n"), file=sys.stderr)
        return 1


def printable(text: str) -> str:
    """`text` safe to print on a terminal: control characters (escape sequences, carriage
    returns, bidi overrides, …) from provider-controlled strings are shown escaped, so a job id
    or an error text cannot rewrite the screen or forge a line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else (
        f"\\U{code:08x}"
    )


def _say(*lines: str, file: Any = None) -> None:
    """Print human output, one line per argument, each made `printable`."""
    for line in lines:
        print(printable(line), file=file or sys.stdout)


def _whole(name: str, minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: the one integer parser of outside input (receiver.core.jsonx)."""

    def parse(text: str) -> int:
        try:
            return jsonx.whole_number(name, text, minimum, maximum)
        except jsonx.NumberInvalid as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _seconds(text: str) -> float:
    try:
        return jsonx.decimal("--deadline-s", text, 0.001, MAX_DEADLINE_S)
    except jsonx.NumberInvalid as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hookyard", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hookyard {__version__}")
    verbs = parser.add_subparsers(required=True, metavar="VERB")

    serve = _verb(verbs, "serve", "run the service", cmd_serve)
    serve.add_argument("--host", help="address to listen on (default: server.host)")
    serve.add_argument(
        "--port", type=_whole("--port", 0, 65535), help="port to listen on (default: server.port)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="run N web processes on the one port plus one worker process (delivery and "
        "polling), supervised; default: everything in this one process",
    )
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="serve HTTP only (webhooks, admin API, /metrics); run `hookyard worker` for "
        "delivery and polling",
    )
    serve.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # a socket from the supervisor

    _verb(verbs, "worker", "run delivery and polling only (no HTTP)", cmd_worker)

    _verb(verbs, "check", "validate a config and print what it would run", cmd_check)

    jobs = verbs.add_parser("jobs", help="watch jobs at providers and list them")
    job_verbs = jobs.add_subparsers(required=True, metavar="VERB")
    watch = _verb(job_verbs, "watch", "poll a job until it ends (safe to repeat)", cmd_jobs_watch)
    watch.add_argument("--source", required=True, help="source name from [sources.NAME]")
    watch.add_argument("--job-id", required=True, help="the provider's job id")
    watch.add_argument(
        "--deadline-s",
        type=_seconds,
        help="give up after this long (generation.expired); default: the source's deadline_s",
    )
    watch.add_argument("--metadata", default="{}", help="JSON object copied onto the job's events")
    listing = _verb(job_verbs, "list", "list watched jobs", cmd_jobs_list)
    listing.add_argument("--source")
    listing.add_argument("--state", choices=JOB_STATES)
    listing.add_argument("--limit", type=_whole("--limit", 1, MAX_PAGE), default=100)

    events = verbs.add_parser("events", help="list and show stored events")
    event_verbs = events.add_subparsers(required=True, metavar="VERB")
    elist = _verb(event_verbs, "list", "list stored events, newest first", cmd_events_list)
    _filters(elist)
    _paging(elist)
    show = _verb(event_verbs, "show", "one event with its deliveries and attempts", cmd_events_show)
    show.add_argument("event_id")

    deliveries = verbs.add_parser("deliveries", help="list deliveries")
    delivery_verbs = deliveries.add_subparsers(required=True, metavar="VERB")
    dlist = _verb(delivery_verbs, "list", "list deliveries by id", cmd_deliveries_list)
    dlist.add_argument("--status", choices=DELIVERY_STATUSES)
    dlist.add_argument("--sink", help="sink name from [sinks.NAME]")
    _paging(dlist)

    again = _verb(
        verbs,
        "replay",
        "send stored events again: one by id, those matching a filter, or every dead delivery",
        cmd_replay,
    )
    again.add_argument("event_id", nargs="?", help="replay this one event")
    _filters(again)
    again.add_argument(
        "--status",
        choices=DELIVERY_STATUSES,
        help="replay the (event, sink) pairs whose latest delivery has this status",
    )
    again.add_argument("--dead", action="store_true", help="short for --status dead")
    again.add_argument("--all", action="store_true", help="replay every event (no filter)")
    again.add_argument(
        "--sink",
        action="append",
        dest="sinks",
        metavar="NAME",
        help="only this sink (repeatable); default: the routes' sinks",
    )
    again.add_argument("--dry-run", action="store_true", help="only count what would be replayed")
    again.add_argument(
        "--yes", action="store_true", help=f"do not ask before replaying over {CONFIRM_OVER}"
    )

    db = verbs.add_parser("db", help="database maintenance")
    db_verbs = db.add_subparsers(required=True, metavar="VERB")
    db_copy = _verb(
        db_verbs, "copy", "copy a whole store to another database, e.g. to PostgreSQL", cmd_db_copy
    )
    db_copy.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="URL",
        help="sqlite:///PATH or postgresql://…; ${ENV} is expanded",
    )
    db_copy.add_argument(
        "--to",
        dest="target",
        required=True,
        metavar="URL",
        help="the same forms; created or migrated, then filled",
    )

    sign = _verb(verbs, "sign", "print the headers that sign a body for a source", cmd_sign)
    sign.add_argument("--source", required=True, help="source name from [sources.NAME]")
    sign.add_argument("--body-file", required=True, help="file with the exact body, or - for stdin")

    prune = _verb(
        verbs,
        "prune",
        "remove old events (with their deliveries and attempts) and ended jobs, once",
        cmd_prune,
    )
    prune.add_argument(
        "--older-than",
        metavar="AGE",
        help='e.g. 90d, 12h, 30m, 3600s (default: [retention] max_age)',
    )
    prune.add_argument("--dry-run", action="store_true", help="only count what would go")
    prune.add_argument("--yes", action="store_true", help="do not ask before removing")
    return parser


CONFIRM_OVER = 100  # deliveries a bulk replay may add without asking


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="source name from [sources.NAME]")
    parser.add_argument("--type", help="event type, e.g. generation.completed")
    parser.add_argument("--job-id", help="the provider's job id")
    parser.add_argument("--since", help="received at or after: ISO 8601 (UTC) or unix seconds")
    parser.add_argument("--until", help="received before: ISO 8601 (UTC) or unix seconds")


def _paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit", type=_whole("--limit", 1, MAX_PAGE), default=50, help="at most this many"
    )
    parser.add_argument("--cursor", help="next_cursor from the previous page")


def _verb(verbs: Any, name: str, help_: str, command: Command) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(name, help=help_, description=help_)
    parser.add_argument("--config", help=f"config file (default: ${settings.ENV_VAR})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(command=command)
    return parser


def _load(args: argparse.Namespace) -> settings.Settings:
    return settings.load(settings.config_path(args.config))


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the service; exit 2 at once (never hang) when the config or the database cannot
    be used, with a message naming the fix."""
    import uvicorn

    from receiver import serving
    from receiver.app import create_app

    config = _load(args)
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    logs.configure(config.secret_values(), cache=True, batched=True)
    if args.workers < 0 or (args.workers and args.no_worker):
        raise ConfigError("--workers takes a number of web processes (1 or more) and brings "
                          "its own worker process; --no-worker is for a single web process")
    _with_store(config, _opened)  # a database that cannot be used fails here, clearly
    if args.workers:
        return _supervise(config, host, port, args.workers)
    files = serving.raise_file_limit()
    max_connections = serving.connection_budget(files, config.server.max_connections)
    # Event batches are committed by a child process: the web process's event loop keeps
    # its GIL to itself (receiver.store.sqlite.writer; PostgreSQL ignores it).
    store = open_store(config.server.database, writer_process=True)
    app = create_app(config, store, worker=not args.no_worker)
    guard = serving.ConnectionGuard(
        max_connections, config.server.request_timeout_s, app.service.metrics
    )
    if args.fd is None:
        _say(
            *describe(config, host, port),
            f"  limits    {max_connections} connections (open files: {files}), a request must "
            f"arrive within {config.server.request_timeout_s:g} s",
            file=sys.stderr,
        )
        sys.stderr.flush()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            http=guard.protocol_class(),
            ws="none",  # hookyard serves no websockets: an upgrade is a plain request
            access_log=False,
            log_config=None,
            lifespan="on",
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    )
    sockets = [socket.socket(fileno=args.fd)] if args.fd is not None else None
    serving.tune_gc()
    # uvicorn shuts down cleanly on Ctrl-C, then re-raises its SIGINT (uvicorn.run catches it
    # the same way); without this a stopped server ends with a traceback.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)
    if not server.started:
        print("hookyard: start-up failed; the log line above says why", file=sys.stderr)
        return 2
    return 0


def _supervise(config: settings.Settings, host: str, port: int, web: int) -> int:
    from receiver import supervisor

    lines = describe(config, host, port)
    lines.insert(1, f"  processes {web} web + 1 worker (supervised)")
    print("\n".join(lines), file=sys.stderr, flush=True)
    with supervisor.bind(host, port) as sock:
        children = supervisor.children(os.path.abspath(config.path), sock, web)
        return supervisor.Supervisor(children).run()


def cmd_worker(args: argparse.Namespace) -> int:
    """Delivery and polling without HTTP, until SIGTERM or SIGINT."""
    config = _load(args)
    logs.configure(config.secret_values(), cache=True, batched=True)
    _with_store(config, _opened)  # a database that cannot be used fails here, clearly
    from receiver import serving

    serving.tune_gc()
    return serving.run_loop(_work(config))


async def _work(config: settings.Settings) -> int:
    import signal

    from receiver.app import Hookyard

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    service = Hookyard(config)
    async with service.lifespan():
        await stop.wait()
    return 0


async def _opened(store: Store) -> None:
    """Nothing: opening (and migrating) the store was the point."""


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    check_store(config.server.database)  # would it open? (creates and changes nothing)
    if args.json:
        print(json.dumps(summary(config), indent=2))
    else:
        _say(f"{config.path}: OK", *describe(config, config.server.host, config.server.port))
    return 0


def cmd_db_copy(args: argparse.Namespace) -> int:
    from receiver import dbcopy

    return dbcopy.run(args.source, args.target, as_json=args.json)


def cmd_sign(args: argparse.Namespace) -> int:
    config = _load(args)
    source = config.sources.get(args.source)
    if source is None:
        raise ConfigError(
            f"{config.path}: no source named {args.source!r}; "
            f"configured: {', '.join(sorted(config.sources)) or 'none'}"
        )
    body = sys.stdin.buffer.read() if args.body_file == "-" else _read(args.body_file)
    verifier = signing.build_verifier(
        source.signature,
        source.secrets,
        source.tolerance_s,
        where=f"sources.{source.name}.signature",
    )
    headers = {"Content-Type": "application/json", **verifier.sign(body)}
    if args.json:
        print(json.dumps(headers, indent=2))
    else:
        _say(*(f"{name}: {value}" for name, value in headers.items()))
    return 0


def _with_store(config: settings.Settings, call: Callable[[Store], Awaitable[T]]) -> T:
    """Open the configured store, make one call, close it."""

    async def go() -> T:
        async with _store(config) as store:
            return await call(store)

    return asyncio.run(go())


@contextlib.asynccontextmanager
async def _store(config: settings.Settings) -> AsyncIterator[Store]:
    """The configured store, opened directly (the server may or may not be running)."""
    store = open_store(config.server.database)
    try:
        await store.open()  # StoreUnusable (exit 2) names the file and the fix
    except StoreUnusable:
        raise
    except (OSError, sqlite3.Error, psycopg.Error) as exc:
        raise ConfigError(f"cannot open {display_url(config.server.database)}: {exc}") from None
    try:
        yield store
    finally:
        await store.close()


def cmd_jobs_watch(args: argparse.Namespace) -> int:
    config = _load(args)
    try:
        metadata = jsonx.loads(args.metadata, numbers=jsonx.REFUSE)
    except jsonx.JSONError as exc:
        raise ConfigError(f"--metadata is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise ConfigError("--metadata must be a JSON object, e.g. '{\"order\": 42}'")
    try:
        src = poller.pollable(config, poller.poll_sources(config), args.source)
        job = poller.plan_job(
            src, args.job_id, now=time.time(), deadline_s=args.deadline_s, metadata=metadata
        )
    except poller.NotPollable as exc:
        raise ConfigError(str(exc)) from None

    stored, new = _with_store(config, lambda store: store.watch_job(job))
    if args.json:
        print(json.dumps({**stored.to_json(), "new": new}, indent=2))
    else:
        what = "watching" if new else f"already known ({stored.state})"
        _say(
            f"{stored.source}/{stored.job_id}: {what}; first poll "
            f"{_when(stored.next_poll_at)}, deadline {_when(stored.deadline_at)}"
        )
    return 0


def cmd_jobs_list(args: argparse.Namespace) -> int:
    config = _load(args)

    jobs = _with_store(
        config, lambda store: store.list_jobs(args.source, args.state, None, args.limit)
    )
    shown = _scrub(config, [j.to_json() for j in jobs])
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    for j, job in zip(jobs, shown, strict=True):
        detail = job["last_error"] or job["last_status"] or ""
        _say(
            f"{j.source:<14} {j.job_id:<40} {j.state:<9} polls={j.polls:<4} "
            f"next={_when(j.next_poll_at) if j.state == 'watching' else '-'}  {detail}"
        )
    if not jobs:
        print("no watched jobs")
    return 0


def _page(args: argparse.Namespace, parts: int = 1) -> tuple[str | None, int]:
    from receiver.admin import decode_cursor, page_size

    cursor = decode_cursor(args.cursor, parts)
    return (cursor[0] if cursor else None), page_size(str(args.limit))


def _envelope(items: list[dict[str, Any]], limit: int, key: str) -> dict[str, Any]:
    from receiver.admin import encode_cursor

    more = len(items) > limit
    cursor = encode_cursor([str(items[limit - 1][key])]) if more else None
    return {"items": items[:limit], "next_cursor": cursor}


def cmd_events_list(args: argparse.Namespace) -> int:
    config = _load(args)
    where = replay.event_filter(vars(args))
    before, limit = _page(args)

    page = _envelope(
        _with_store(config, lambda store: store.list_events(where, before, limit + 1)), limit, "id"
    )
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    for e in page["items"]:
        _say(
            f"{e['id']}  {e['received_at'][:19]}Z  {e['source']:<12} {e['type']:<22} "
            f"{e.get('job_id') or '-'}"
        )
    _more(page, "no events match")
    return 0


def cmd_events_show(args: argparse.Namespace) -> int:
    config = _load(args)

    event = _with_store(config, lambda store: store.get_event(args.event_id))
    if event is None:
        print(f"hookyard: no event {args.event_id!r}", file=sys.stderr)
        return 1
    _scrub(config, event["deliveries"])
    if args.json:
        print(json.dumps(event, indent=2))
    else:
        _say(*describe_event(event))
    return 0


def describe_event(event: dict[str, Any]) -> list[str]:
    """An event and the story of its deliveries, for a person."""
    lines = [
        f"{event['id']}  {event['type']}  from {event['source']} ({event['provider']})",
        f"  job {event.get('job_id') or '-'}  status {event.get('status') or '-'}  "
        f"received {event['received_at']} via {event['via']}",
    ]
    lines += [f"  output {url}" for url in event.get("outputs") or []]
    if event.get("error"):
        lines.append(f"  error  {event['error']}")
    if not event["deliveries"]:
        lines.append("  deliveries: none (no route sent this event to a sink)")
    for d in event["deliveries"]:
        lines.append("  " + _delivery_line(d))
        for a in d["attempt_log"]:
            code = a["status_code"] if a["status_code"] is not None else "-"
            lines.append(
                f"      {_when(a['started_at'])}  {a['outcome']:<9} {code}  "
                f"{a['duration_ms']:.0f} ms  {a['error'] or ''}".rstrip()
            )
    return lines


def _delivery_line(d: dict[str, Any]) -> str:
    how = f"replay of #{d['replay_of']}" if d["replay_of"] else d["cause"]
    due = f"  next {_when(d['next_attempt_at'])}" if d["status"] == "pending" else ""
    error = f"  last error: {d['last_error']}" if d["last_error"] else ""
    return (
        f"#{d['id']:<6} {d['sink']:<12} {d['status']:<9} attempts={d['attempts']} ({how})"
        f"{due}{error}"
    )


def cmd_deliveries_list(args: argparse.Namespace) -> int:
    config = _load(args)
    after, limit = _page(args)
    try:
        after_id = None if after is None else jsonx.whole_number("--cursor", after, 0, 2**63 - 1)
    except jsonx.NumberInvalid:
        raise ConfigError("--cursor is not one hookyard gave out") from None

    page = _envelope(
        _with_store(
            config,
            lambda store: store.list_deliveries(
                args.status, args.sink, after_id, limit + 1
            ),
        ),
        limit,
        "id",
    )
    _scrub(config, page["items"])
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    for d in page["items"]:
        _say(f"{d['event_id']}  {_delivery_line(d)}")
    _more(page, "no deliveries match")
    return 0


def _scrub(config: settings.Settings, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Error texts without a configured secret (see receiver.admin.scrub)."""
    from receiver.admin import scrub

    return scrub(rows, masking.ordered(config.secret_values()))


def _more(page: dict[str, Any], empty: str) -> None:
    if not page["items"]:
        print(empty)
    if page["next_cursor"]:
        print(f"(more: --cursor {page['next_cursor']})")


def cmd_replay(args: argparse.Namespace) -> int:
    config = _load(args)
    status = "dead" if args.dead else args.status
    if args.dead and args.status not in (None, "dead"):
        raise ConfigError(f"--dead and --status {args.status} contradict each other")
    filtered = any(
        getattr(args, k) is not None for k in ("source", "type", "job_id", "since", "until")
    )
    sinks = tuple(args.sinks) if args.sinks else None
    if args.event_id is not None:
        if filtered or status or args.all or args.dry_run:
            raise ConfigError("replay EVENT_ID takes only --sink; filters are for bulk replays")
        return _replay_one(config, args.event_id, sinks, args.json)
    if not (filtered or status or args.all):
        raise ConfigError(
            "say what to replay: an event id, a filter (--source, --type, --job-id, --since, "
            "--until), --dead or --status, or --all for every event"
        )
    request = replay.ReplayRequest(replay.event_filter(vars(args)), status, sinks, args.dry_run)
    return asyncio.run(_replay_bulk(config, request, yes=args.yes, as_json=args.json))


def _replay_one(
    config: settings.Settings, event_id: str, sinks: tuple[str, ...] | None, as_json: bool
) -> int:
    made = _with_store(config, lambda store: _replayer(config, store).replay_event(event_id, sinks))
    if as_json:
        deliveries = [{"id": i, "sink": s} for i, s in made]
        print(json.dumps({"event_id": event_id, "deliveries": deliveries}, indent=2))
    else:
        _say(f"{event_id}: replaying to " + ", ".join(f"{s} (#{i})" for i, s in made))
    return 0


def _replayer(config: settings.Settings, store: Store) -> replay.Replayer:
    return replay.Replayer(store, Router(config.routes).sinks_for, config.sinks)


async def _replay_bulk(
    config: settings.Settings, request: replay.ReplayRequest, *, yes: bool, as_json: bool
) -> int:
    async with _store(config) as store:
        replayer = _replayer(config, store)
        scope, plan = await replayer.plan(request)
        if request.dry_run or not plan.deliveries:
            _report(plan if request.dry_run else replay.Counts(0, 0), as_json)
            return 0
        if plan.deliveries > CONFIRM_OVER and not yes and not _confirm(plan):
            return 1
        bar = Progress("replay")
        done = await replayer.run(
            scope, lambda sent, _: bar.update(sent, plan.deliveries, "deliveries queued")
        )
        bar.finish()
    _report(done, as_json)
    return 0


def _confirm(plan: replay.Counts) -> bool:
    what = f"{plan.deliveries} deliveries of {plan.events} events"
    return _ask("replay", "replayed", f"{what} (more than {CONFIRM_OVER})")


def _ask(verb: str, done: str, what: str) -> bool:
    """Ask on the terminal before a bulk change (replay, prune); without a terminal (cron,
    CI) refuse and say how to go ahead."""
    if sys.stdin is None or not sys.stdin.isatty():
        print(
            f"hookyard: this would {verb} {what} and there is no terminal to ask on; pass "
            "--yes to go ahead, or --dry-run to only count",
            file=sys.stderr,
        )
        return False
    print(f"{verb} {what}? [y/N] ", end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip().lower() in ("y", "yes"):
        return True
    print(f"nothing {done}", file=sys.stderr)
    return False


def _report(counts: replay.Counts, as_json: bool) -> None:
    if as_json:
        print(json.dumps(counts.to_json(), indent=2))
    elif counts.dry_run:
        print(
            f"would replay {counts.deliveries} deliveries of {counts.events} events "
            "(dry run: nothing written)"
        )
    else:
        print(
            f"replayed {counts.deliveries} deliveries of {counts.events} events; the sink "
            "runners send them at each sink's pace"
        )


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the body file: {exc.strerror}") from None


def summary(config: settings.Settings) -> dict[str, Any]:
    """What the config would run, without a single secret."""
    return {
        "config": config.path,
        "database": display_url(config.server.database),
        "admin_api": config.server.admin_token is not None,
        "sources": {
            name: {
                "provider": s.provider,
                "scheme": s.scheme,
                "secrets": len(s.secrets),
                "webhook_path": f"/hooks/{name}",
                "confirm": s.confirm,
            }
            for name, s in config.sources.items()
        },
        "sinks": {
            name: {"type": s.type, "target": _sink_target(s)} for name, s in config.sinks.items()
        },
        "routes": [
            {"sources": list(r.sources), "types": list(r.types), "sinks": list(r.sinks)}
            for r in config.routes
        ],
        "retention": {"max_age": config.retention.max_age},
    }


def _sink_target(sink: settings.SinkSettings) -> str:
    """Where a sink sends, safe to print: its type's spec says how."""
    return SINK_SPECS[sink.type].describe(sink.options)


def describe(config: settings.Settings, host: str, port: int) -> list[str]:
    """The start-up banner: address, webhook URLs, sinks, routes and database."""
    base = f"http://{host}:{port}"
    db = config.server.database
    where = f"  ({os.path.abspath(config.server.sqlite_path)})" if db.startswith("sqlite:") else ""
    lines = [
        f"hookyard {__version__} listening on {base}",
        f"  database  {display_url(db)}{where}",
    ]
    for name, s in config.sources.items():
        kind = f"{s.provider}/{s.scheme}"
        url = f"POST {base}/hooks/{name}" if s.receives_webhooks else "polled (no webhook URL)"
        lines.append(f"  source    {name:<14} {kind:<28} {url}")
    for name, sink in config.sinks.items():
        lines.append(f"  sink      {name:<14} {sink.type:<6} {_sink_target(sink)}")
    for route in config.routes:
        lines.append(
            f"  route     {','.join(route.sources)} / {','.join(route.types)} → "
            f"{', '.join(route.sinks)}"
        )
    if not config.routes:
        lines.append("  route     (none: events are stored but sent nowhere)")
    admin = "on (bearer token)" if config.server.admin_token else "off (no server.admin_token)"
    lines.append(f"  admin API {admin}")
    keep = config.retention
    lines.append(
        f"  retention events older than {keep.max_age} (and ended jobs) are pruned"
        if keep.max_age_s is not None
        else "  retention everything is kept (max_age = \"0\")"
    )
    return lines


def cmd_prune(args: argparse.Namespace) -> int:
    """One retention pass by hand: count first, ask on a terminal (unless --yes), remove."""
    config = _load(args)
    age = args.older_than or config.retention.max_age
    try:
        max_age_s = settings.parse_age(age)
    except ValueError as exc:
        raise ConfigError(f"--older-than {exc}") from None
    if max_age_s is None:
        raise ConfigError(
            '[retention] max_age = "0" keeps everything; pass --older-than (e.g. 90d) to '
            "prune anyway"
        )
    return asyncio.run(_prune(config, age, time.time() - max_age_s, args))


async def _prune(
    config: settings.Settings, age: str, older_than: float, args: argparse.Namespace
) -> int:
    from receiver.retention import prune_pass

    async with _store(config) as store:
        plan = await prune_pass(store, older_than, dry_run=True)
        size = await store.database_size()
        if args.dry_run or not plan.events + plan.jobs:
            _report_prune(plan, age, size, size, dry_run=True, as_json=args.json)
            return 0
        if not args.yes and not _confirm_prune(plan, age):
            return 1
        bar, removed = Progress("prune", bar=False, min_interval_s=1.0), 0

        def progress(step: Pruned) -> None:  # at most a line a second: thousands of batches
            nonlocal removed
            removed += step.events
            if step.events:
                bar.update(removed, plan.events, "events removed")

        done = await prune_pass(store, older_than, progress=progress)
        bar.finish()
        after = await store.database_size()
    _report_prune(done, age, size, after, dry_run=False, as_json=args.json)
    return 0


def _confirm_prune(plan: Pruned, age: str) -> bool:
    what = (
        f"{plan.events} events older than {age} ({plan.deliveries} deliveries) and "
        f"{plan.jobs} ended jobs"
    )
    return _ask("remove", "removed", what)


def _report_prune(
    counts: Pruned, age: str, before: int, after: int, *, dry_run: bool, as_json: bool
) -> None:
    if as_json:
        print(json.dumps({"dry_run": dry_run, "older_than": age, **counts.to_json(),
                          "database_bytes": after}, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    print(
        f"{verb} {counts.events} events older than {age}, {counts.deliveries} deliveries, "
        f"{counts.attempts} attempts, {counts.mirrors} mirror records and {counts.jobs} ended "
        "jobs" + (" (dry run: nothing removed)" if dry_run else "")
    )
    print(f"database size {_mib(before)}" + ("" if dry_run else f" -> {_mib(after)}"))


def _mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"


if __name__ == "__main__":
    raise SystemExit(main())
