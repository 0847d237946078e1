"""The `hookyard` command: serve, check, sign."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from receiver import __version__, logs, poller, settings, signing
from receiver.errors import ConfigError
from receiver.store import JOB_STATES, Job, Store, open_store

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command: Command = args.command
    try:
        return command(args)
    except ConfigError as exc:
        print(f"hookyard: {exc.message}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hookyard", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hookyard {__version__}")
    verbs = parser.add_subparsers(required=True, metavar="VERB")

    serve = _verb(verbs, "serve", "run the service", cmd_serve)
    serve.add_argument("--host", help="address to listen on (default: server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port)")

    _verb(verbs, "check", "validate a config and print what it would run", cmd_check)

    jobs = verbs.add_parser("jobs", help="watch jobs at providers and list them")
    job_verbs = jobs.add_subparsers(required=True, metavar="VERB")
    watch = _verb(job_verbs, "watch", "poll a job until it ends (safe to repeat)", cmd_jobs_watch)
    watch.add_argument("--source", required=True, help="source name from [sources.NAME]")
    watch.add_argument("--job-id", required=True, help="the provider's job id")
    watch.add_argument(
        "--deadline-s",
        type=float,
        help="give up after this long (generation.expired); default: the source's deadline_s",
    )
    watch.add_argument("--metadata", default="{}", help="JSON object copied onto the job's events")
    listing = _verb(job_verbs, "list", "list watched jobs", cmd_jobs_list)
    listing.add_argument("--source")
    listing.add_argument("--state", choices=JOB_STATES)
    listing.add_argument("--limit", type=int, default=100)

    sign = _verb(verbs, "sign", "print the headers that sign a body for a source", cmd_sign)
    sign.add_argument("--source", required=True, help="source name from [sources.NAME]")
    sign.add_argument("--body-file", required=True, help="file with the exact body, or - for stdin")
    return parser


def _verb(verbs: Any, name: str, help_: str, command: Command) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(name, help=help_, description=help_)
    parser.add_argument("--config", help=f"config file (default: ${settings.ENV_VAR})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(command=command)
    return parser


def _load(args: argparse.Namespace) -> settings.Settings:
    return settings.load(settings.config_path(args.config))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from receiver.app import create_app

    config = _load(args)
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    logs.configure(config.secret_values(), cache=True)
    app = create_app(config)
    print("\n".join(describe(config, host, port)), file=sys.stderr, flush=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.json:
        print(json.dumps(summary(config), indent=2))
    else:
        print(f"{config.path}: OK")
        print("\n".join(describe(config, config.server.host, config.server.port)))
    return 0


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
        print("\n".join(f"{name}: {value}" for name, value in headers.items()))
    return 0


@contextlib.asynccontextmanager
async def _store(config: settings.Settings) -> AsyncIterator[Store]:
    """The configured store, opened directly (the server may or may not be running)."""
    store = open_store(config.server.database)
    try:
        await store.open()
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot open {config.server.database}: {exc}") from None
    try:
        yield store
    finally:
        await store.close()


def cmd_jobs_watch(args: argparse.Namespace) -> int:
    config = _load(args)
    try:
        metadata = json.loads(args.metadata)
    except ValueError:
        metadata = None
    if not isinstance(metadata, dict):
        raise ConfigError("--metadata must be a JSON object, e.g. '{\"order\": 42}'")
    try:
        src = poller.pollable(config, poller.poll_sources(config), args.source)
        job = poller.plan_job(
            src, args.job_id, now=time.time(), deadline_s=args.deadline_s, metadata=metadata
        )
    except poller.NotPollable as exc:
        raise ConfigError(str(exc)) from None

    async def go() -> tuple[Job, bool]:
        async with _store(config) as store:
            return await store.watch_job(job)

    stored, new = asyncio.run(go())
    if args.json:
        print(json.dumps({**stored.to_json(), "new": new}, indent=2))
    else:
        what = "watching" if new else f"already known ({stored.state})"
        print(
            f"{stored.source}/{stored.job_id}: {what}; first poll "
            f"{_when(stored.next_poll_at)}, deadline {_when(stored.deadline_at)}"
        )
    return 0


def cmd_jobs_list(args: argparse.Namespace) -> int:
    config = _load(args)

    async def go() -> list[Job]:
        async with _store(config) as store:
            return await store.list_jobs(args.source, args.state, None, args.limit)

    jobs = asyncio.run(go())
    if args.json:
        print(json.dumps([j.to_json() for j in jobs], indent=2))
        return 0
    for j in jobs:
        detail = j.last_error or j.last_status or ""
        print(
            f"{j.source:<14} {j.job_id:<40} {j.state:<9} polls={j.polls:<4} "
            f"next={_when(j.next_poll_at) if j.state == 'watching' else '-'}  {detail}"
        )
    if not jobs:
        print("no watched jobs")
    return 0


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
        "database": config.server.database,
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
    }


def _sink_target(sink: settings.SinkSettings) -> str:
    """Where a sink sends, safe to print (a Slack webhook URL is a credential)."""
    options = sink.options
    if sink.type == "slack":
        return "a Slack incoming webhook"
    if sink.type == "s3":
        return f"s3://{options.get('bucket')}/{options.get('prefix', '')}"
    return str(options.get("url") or options.get("path") or "")


def describe(config: settings.Settings, host: str, port: int) -> list[str]:
    """The start-up banner: address, webhook URLs, sinks, routes and database."""
    base = f"http://{host}:{port}"
    db = config.server.database
    lines = [
        f"hookyard {__version__} listening on {base}",
        f"  database  {db}  ({os.path.abspath(config.server.sqlite_path)})",
    ]
    for name, s in config.sources.items():
        lines.append(f"  source    {name:<14} {s.provider}/{s.scheme:<18} POST {base}/hooks/{name}")
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
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
