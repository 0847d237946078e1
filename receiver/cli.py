"""The `hookyard` command: serve, check, sign."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from receiver import __version__, logs, settings, signing
from receiver.errors import ConfigError

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
