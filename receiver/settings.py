"""Configuration: one TOML file, `${ENV}` interpolation, validated whole at start-up.

Every mistake is collected and reported together, each line naming the file, the key and the
fix; nothing half-valid ever runs (fail closed).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from handlers import providers
from handlers.providers.base import Provider
from handlers.sinks import SINK_SPECS
from receiver.core import events, masking, signing
from receiver.core.errors import ConfigError
from receiver.store import database_password, display_url

ENV_VAR = "HOOKYARD_CONFIG"
DEFAULT_RETRY_SCHEDULE_S = (
    5.0,
    30.0,
    120.0,
    600.0,
    1800.0,
    3600.0,
    10800.0,
    21600.0,
    43200.0,
    86400.0,
)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

SERVER_KEYS = frozenset(
    {
        "host",
        "port",
        "database",
        "max_body_bytes",
        "admin_token",
        "request_timeout_s",
        "max_connections",
    }
)
SOURCE_KEYS = frozenset(
    {
        "provider",
        "secrets",
        "api_key",
        "tolerance_s",
        "fallback_poll_after_s",
        "base_url",
        "signature",
        "confirm",
        "deadline_s",
        "poll_rate_per_s",
        "poll_first_delay_s",
        "poll_max_interval_s",
    }
)
ROUTE_KEYS = frozenset({"sources", "types", "sinks"})
TOP_KEYS = frozenset({"server", "sources", "sinks", "routes", "retention"})
RETENTION_KEYS = frozenset({"max_age"})
DEFAULT_MAX_AGE = "90d"
_AGE = re.compile(r"^(\d{1,9})([smhd])$")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    database: str = "sqlite:///./hookyard.db"
    max_body_bytes: int = 1_048_576
    admin_token: str | None = None
    # A connection must send a complete request within this; idle sockets cannot pile up.
    request_timeout_s: float = 10.0
    max_connections: int | None = None  # None: derived from the open-file limit at start

    @property
    def sqlite_path(self) -> str:
        """The database file of a `sqlite:///PATH` URL (validated at load)."""
        return self.database.removeprefix("sqlite:///")


@dataclass(frozen=True, slots=True)
class SourceSettings:
    name: str
    provider: str
    signature: Mapping[str, Any]  # merged with the provider's preset
    secrets: tuple[str, ...] = ()
    api_key: str | None = None
    tolerance_s: float = 300.0
    fallback_poll_after_s: float = 300.0
    base_url: str | None = None
    confirm: str | None = None
    deadline_s: float = 3600.0  # a watched job that has not ended by then is expired
    poll_rate_per_s: float | None = None  # a cap of our own on top of the provider's limits
    poll_first_delay_s: float | None = None  # None: the provider module's default
    poll_max_interval_s: float | None = None

    @property
    def scheme(self) -> str:
        return str(self.signature["scheme"])

    @property
    def receives_webhooks(self) -> bool:
        """False for a polling-only source: its /hooks URL answers 404."""
        return self.confirm == "fetch" or self.scheme != "none"


@dataclass(frozen=True, slots=True)
class SinkSettings:
    name: str
    type: str
    options: Mapping[str, Any]  # the type's own keys (url, bucket, path, …)
    retry_schedule_s: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_S
    max_attempts: int = len(DEFAULT_RETRY_SCHEDULE_S) + 1
    concurrency: int = 4
    rate_per_s: float | None = None
    timeout_s: float = 10.0
    # The s3 sink (with mirror_outputs) whose mirrored copies this sink sends as `outputs`.
    outputs_from: str | None = None
    # Every configured secret (Settings.secret_values), longest first: what `mask` removes.
    secrets: tuple[str, ...] = ()

    def mask(self, text: str) -> str:
        """`text` (an attempt's error) without any configured secret, this sink's own URL
        credentials included: it is stored, shown by the admin API and logged."""
        own = masking.ordered(_credentials(self))
        return masking.mask_secrets(masking.mask_secrets(text, self.secrets), own)


@dataclass(frozen=True, slots=True)
class Route:
    sources: tuple[str, ...]  # names, or ("*",)
    types: tuple[str, ...]  # event types, or ("*",)
    sinks: tuple[str, ...]

    def matches(self, source: str, type_: str) -> bool:
        return ("*" in self.sources or source in self.sources) and (
            "*" in self.types or type_ in self.types
        )


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """`[retention]`: how long events (with their deliveries and attempts) and ended watched
    jobs are kept. `max_age_s` None keeps everything (`max_age = "0"`)."""

    max_age: str = DEFAULT_MAX_AGE
    max_age_s: float | None = 90 * 86400.0


def parse_age(value: object) -> float | None:
    """`"90d"`, `"12h"`, `"30m"`, `"3600s"` as seconds; `"0"` as None (keep everything).
    ValueError with the accepted forms otherwise."""
    if value == "0":
        return None
    match = _AGE.match(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f'must be a whole number with a unit s, m, h or d (e.g. "90d"), or "0" to keep '
            f"everything, not {value!r}"
        )
    return float(int(match.group(1)) * _AGE_UNITS[match.group(2)])


@dataclass(frozen=True, slots=True)
class Settings:
    path: str
    server: ServerSettings = field(default_factory=ServerSettings)
    sources: Mapping[str, SourceSettings] = field(default_factory=dict)
    sinks: Mapping[str, SinkSettings] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    retention: RetentionSettings = field(default_factory=RetentionSettings)

    def secret_values(self) -> list[str]:
        """Every configured secret, key and token, and the credential parts (userinfo, query
        values) of every configured URL: what no log line, banner or API answer may show."""
        values: list[str] = []
        for source in self.sources.values():
            values.extend(source.secrets)
            if source.api_key:
                values.append(source.api_key)
            if source.base_url:
                values.extend(masking.url_secrets(source.base_url))
        for sink in self.sinks.values():
            values.extend(_credentials(sink))
        if self.server.admin_token:
            values.append(self.server.admin_token)
        values.append(database_password(self.server.database) or "")
        return [v for v in values if len(v) >= masking.MIN_SECRET]



def _credentials(sink: SinkSettings) -> list[str]:
    """What of a sink's own options no output may show; its type's spec knows which."""
    spec = SINK_SPECS.get(sink.type)
    return spec.secrets(sink.options) if spec is not None else []


def config_path(explicit: str | None) -> str:
    """The config file to use: `--config`, else $HOOKYARD_CONFIG."""
    path = explicit or os.environ.get(ENV_VAR)
    if not path:
        raise ConfigError(
            f"no configuration given: pass --config FILE or set {ENV_VAR} "
            "(deploy/hookyard.example.toml runs as is)"
        )
    return path


def load(path: str, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, interpolate and validate the config file; raise ConfigError listing every problem."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; pass an existing config to --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return _Loader(path, os.environ if environ is None else environ).build(data)


class _Loader:
    """Collects every problem of one file before giving up."""

    def __init__(self, path: str, environ: Mapping[str, str]) -> None:
        self.path = path
        self.environ = environ
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{self.path}: [{where}] {message}")

    def build(self, raw: Mapping[str, Any]) -> Settings:
        data = self.interpolate(raw, "")
        self.check_keys("top level", data, TOP_KEYS)
        server = self.server(self.table(data, "server"))
        source_tables = self.tables(data, "sources")
        sources = {
            name: src
            for name, table in source_tables.items()
            if (src := self.source(name, table)) is not None
        }
        sink_tables = self.tables(data, "sinks")
        sinks = {
            name: sink
            for name, table in sink_tables.items()
            if (sink := self.sink(name, table)) is not None
        }
        # A source or sink that is defined but invalid has its own error already; a route
        # naming it must not add a false "not defined" one.
        routes = self.routes(data.get("routes", []), set(source_tables), set(sink_tables))
        retention = self.retention(self.table(data, "retention"))
        self.check_outputs_from(sinks, routes)
        if self.problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(self.problems))
        settings = Settings(self.path, server, sources, sinks, routes, retention)
        secrets = masking.ordered(settings.secret_values())
        masked = {n: dataclasses.replace(s, secrets=secrets) for n, s in sinks.items()}
        return dataclasses.replace(settings, sinks=masked)

    # -- generic helpers -------------------------------------------------------------------

    def interpolate(self, value: Any, where: str) -> Any:
        if isinstance(value, str):
            return _ENV_REF.sub(lambda m: self.env(m.group(1), where), value)
        if isinstance(value, dict):
            return {
                k: self.interpolate(v, f"{where}.{k}" if where else k) for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.interpolate(v, where) for v in value]
        return value

    def env(self, name: str, where: str) -> str:
        if name in self.environ:
            return self.environ[name]
        self.problems.append(
            f"{self.path}: [{where}] uses ${{{name}}}, but the environment variable {name} "
            "is not set; export it or write the value into the file"
        )
        return ""

    def check_keys(self, where: str, table: Mapping[str, Any], allowed: frozenset[str]) -> None:
        for key in table:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                fix = (
                    f'did you mean "{hint[0]}"?'
                    if hint
                    else "allowed: " + ", ".join(sorted(allowed))
                )
                self.fail(where, f'unknown key "{key}"; {fix}')

    def table(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, "must be a table")
            return {}
        return value

    def tables(self, data: Mapping[str, Any], key: str) -> Mapping[str, Mapping[str, Any]]:
        result: dict[str, Mapping[str, Any]] = {}
        for name, value in self.table(data, key).items():
            if isinstance(value, dict):
                result[name] = value
            else:
                self.fail(f"{key}.{name}", "must be a table")
        return result

    def number(
        self, where: str, table: Mapping[str, Any], key: str, default: float, minimum: float = 0.0
    ) -> float:
        value = table.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            self.fail(where, f"{key} must be a number, not {value!r}")
            return default
        if value < minimum:
            self.fail(where, f"{key} must be at least {minimum:g}, not {value!r}")
            return default
        return float(value)

    def integer(
        self,
        where: str,
        table: Mapping[str, Any],
        key: str,
        default: int,
        minimum: int,
        maximum: int | None = None,
    ) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"{key} must be a whole number, not {value!r}")
            return default
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            self.fail(where, f"{key} must be at least {minimum}{upper}, not {value!r}")
            return default
        return value

    def string(
        self, where: str, table: Mapping[str, Any], key: str, required: bool = False
    ) -> str | None:
        value = table.get(key)
        if value is None:
            if required:
                self.fail(where, f"{key} is required")
            return None
        if not isinstance(value, str) or not value:
            self.fail(where, f"{key} must be a non-empty string")
            return None
        return value

    def string_list(self, where: str, table: Mapping[str, Any], key: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(where, f"{key} must be a list of non-empty strings")
            return ()
        return tuple(value)

    # -- sections --------------------------------------------------------------------------

    def server(self, table: Mapping[str, Any]) -> ServerSettings:
        self.check_keys("server", table, SERVER_KEYS)
        defaults = ServerSettings()
        database = self.string("server", table, "database") or defaults.database
        if database.startswith(("postgresql://", "postgres://")):
            if database.partition("://")[2].split("?")[0] in ("", "/"):
                self.fail("server", "database must name a server, e.g. postgresql://user@host/db")
        elif not database.startswith("sqlite:///") or database == "sqlite:///":
            self.fail(
                "server",
                "database must look like sqlite:///./hookyard.db or "
                f"postgresql://user@host:5432/hookyard, not {display_url(database)!r}",
            )
        token = table.get("admin_token")
        if token is not None and (not isinstance(token, str) or len(token) < 16):
            self.fail(
                "server",
                "admin_token must be a string of at least 16 characters; "
                "remove the key to turn the admin API off",
            )
            token = None
        return ServerSettings(
            host=self.string("server", table, "host") or defaults.host,
            port=self.integer("server", table, "port", defaults.port, 0, 65535),
            database=database,
            max_body_bytes=self.integer(
                "server", table, "max_body_bytes", defaults.max_body_bytes, 1
            ),
            admin_token=token,
            request_timeout_s=self.number(
                "server", table, "request_timeout_s", defaults.request_timeout_s, minimum=0.1
            ),
            max_connections=(
                self.integer("server", table, "max_connections", 0, 1)
                if "max_connections" in table
                else None
            ),
        )

    def source(self, name: str, table: Mapping[str, Any]) -> SourceSettings | None:
        where = f"sources.{name}"
        before = len(self.problems)
        if not _SOURCE_NAME.match(name):
            self.fail(
                where,
                "the source name becomes the URL /hooks/NAME: use lower-case "
                "letters, digits, - and _ (at most 64)",
            )
        self.check_keys(where, table, SOURCE_KEYS)
        provider_name = self.string(where, table, "provider", required=True)
        provider = providers.PROVIDERS.get(provider_name or "")
        if provider_name and provider is None:
            self.fail(
                where,
                f'provider "{provider_name}" is unknown; known: '
                + ", ".join(sorted(providers.PROVIDERS)),
            )
        secrets = self.string_list(where, table, "secrets")
        tolerance = self.number(where, table, "tolerance_s", 300.0, minimum=1.0)
        signature = self.signature(where, table, provider)
        confirm = self.string(where, table, "confirm")
        api_key = self.string(where, table, "api_key")
        if provider is not None:
            self.check_polling(where, provider, signature, confirm, api_key)
        base_url = self.string(where, table, "base_url")
        if base_url and not base_url.startswith(("http://", "https://")):
            self.fail(where, "base_url must start with http:// or https://")
        if (
            signature is not None
            and signature.get("scheme") != "none"
            and len(self.problems) == before
        ):
            self.verifier(where, signature, secrets, tolerance)
        if provider is None or signature is None or len(self.problems) > before:
            return None
        return SourceSettings(
            name=name,
            provider=provider.name,
            signature=signature,
            secrets=secrets,
            api_key=api_key,
            tolerance_s=tolerance,
            fallback_poll_after_s=self.number(where, table, "fallback_poll_after_s", 300.0),
            base_url=base_url.rstrip("/") if base_url else None,
            confirm=confirm,
            deadline_s=self.number(where, table, "deadline_s", 3600.0, minimum=1.0),
            poll_rate_per_s=self.optional_number(where, table, "poll_rate_per_s", 0.001),
            poll_first_delay_s=self.optional_number(where, table, "poll_first_delay_s", 0.0),
            poll_max_interval_s=self.optional_number(where, table, "poll_max_interval_s", 0.1),
        )

    def optional_number(
        self, where: str, table: Mapping[str, Any], key: str, minimum: float
    ) -> float | None:
        return self.number(where, table, key, minimum, minimum) if key in table else None

    def signature(
        self, where: str, table: Mapping[str, Any], provider: Provider | None
    ) -> dict[str, Any] | None:
        configured = table.get("signature", {})
        if not isinstance(configured, dict):
            self.fail(where, 'signature must be a table, e.g. signature = { scheme = "hmac", … }')
            return None
        preset = dict(provider.signature_preset or {}) if provider else {}
        if "scheme" in configured and configured["scheme"] != preset.get("scheme"):
            preset = {}  # another scheme than the preset's: none of the preset's keys apply
        merged = {**preset, **configured}
        if provider is not None and not provider.pushes_webhooks and "scheme" not in merged:
            return {"scheme": "none"}  # a polling-only source: no webhook URL at all
        if provider is not None and "scheme" not in merged:
            self.fail(
                where,
                f'provider "{provider.name}" has no signing preset: set '
                'signature = { scheme = "standard-webhooks" } (or stripe, hmac, fal, '
                'or "none" with confirm = "fetch")',
            )
            return None
        return merged

    def check_polling(
        self,
        where: str,
        provider: Provider,
        signature: Mapping[str, Any] | None,
        confirm: str | None,
        api_key: str | None,
    ) -> None:
        """Confirm-by-fetch and polling-only sources need the provider's status API and a key."""
        name = provider.name
        if confirm is not None and confirm != "fetch":
            self.fail(where, f'confirm must be "fetch" (or left out), not {confirm!r}')
        elif confirm == "fetch" and provider.poll is None:
            self.fail(
                where,
                f'confirm = "fetch" needs a status API, and provider "{name}" '
                "has none hookyard knows; verify its signature instead",
            )
        elif confirm == "fetch" and not api_key:
            self.fail(where, 'confirm = "fetch" asks the provider for the job: set api_key')
        elif not provider.pushes_webhooks and not api_key:
            self.fail(
                where, f'provider "{name}" sends no webhooks, so hookyard polls it: set api_key'
            )
        elif (
            signature is not None
            and signature.get("scheme") == "none"
            and provider.pushes_webhooks
            and confirm is None
        ):
            self.fail(
                where,
                'signature scheme "none" accepts unsigned callbacks, so it is '
                'only allowed together with confirm = "fetch"',
            )

    def verifier(
        self, where: str, signature: Mapping[str, Any], secrets: Sequence[str], tolerance: float
    ) -> None:
        try:
            signing.build_verifier(signature, secrets, tolerance, where=f"{where}.signature")
        except ConfigError as exc:
            self.fail(where, exc.message)

    def sink(self, name: str, table: Mapping[str, Any]) -> SinkSettings | None:
        """The keys every sink takes are checked here; the type's own keys by its spec."""
        where = f"sinks.{name}"
        before = len(self.problems)
        type_ = self.string(where, table, "type", required=True)
        spec = SINK_SPECS.get(type_ or "")
        if type_ and spec is None:
            self.fail(
                where, f'sink type "{type_}" is unknown; known: ' + ", ".join(sorted(SINK_SPECS))
            )
        if spec is None:
            return None
        self.check_keys(where, table, spec.allowed)
        options = {k: v for k, v in table.items() if k in spec.keys}
        for problem in spec.check(options):
            self.fail(where, problem)
        schedule = self.schedule(where, table)
        sink = SinkSettings(
            name=name,
            type=spec.type,
            options=options,
            retry_schedule_s=schedule,
            max_attempts=self.integer(where, table, "max_attempts", len(schedule) + 1, 1),
            concurrency=self.integer(where, table, "concurrency", 4, 1, 1000),
            rate_per_s=(
                self.number(where, table, "rate_per_s", 1.0, minimum=0.001)
                if "rate_per_s" in table
                else spec.default_rate_per_s
            ),
            timeout_s=self.number(where, table, "timeout_s", 10.0, minimum=0.1),
            outputs_from=self.string(where, table, "outputs_from"),
        )
        return sink if len(self.problems) == before else None

    def schedule(self, where: str, table: Mapping[str, Any]) -> tuple[float, ...]:
        value = table.get("retry_schedule_s", list(DEFAULT_RETRY_SCHEDULE_S))
        if (
            not isinstance(value, list)
            or not value
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value
            )
        ):
            self.fail(
                where, "retry_schedule_s must be a non-empty list of seconds, e.g. [5, 30, 120]"
            )
            return DEFAULT_RETRY_SCHEDULE_S
        return tuple(float(v) for v in value)

    def routes(self, value: Any, sources: set[str], sinks: set[str]) -> tuple[Route, ...]:
        """The routes; `sources` and `sinks` are the names defined (valid or not)."""
        if not isinstance(value, list):
            self.fail("routes", "write routes as [[routes]] tables")
            return ()
        routes = []
        for i, table in enumerate(value):
            where = f"routes[{i}]"
            if not isinstance(table, dict):
                self.fail(where, "each route must be a table")
                continue
            self.check_keys(where, table, ROUTE_KEYS)
            route = Route(
                sources=self.string_list(where, table, "sources") or ("*",),
                types=self.string_list(where, table, "types") or ("*",),
                sinks=self.string_list(where, table, "sinks"),
            )
            self.check_route(where, route, sources, sinks)
            routes.append(route)
        return tuple(routes)

    def check_route(self, where: str, route: Route, sources: set[str], sinks: set[str]) -> None:
        if not route.sinks:
            self.fail(where, "sinks must name at least one sink")
        for sink in route.sinks:
            if sink not in sinks:
                self.fail(
                    where,
                    f'names sink "{sink}", which is not defined; add [sinks.{sink}] '
                    "or fix the name",
                )
        for source in route.sources:
            if source != "*" and source not in sources:
                self.fail(where, f'names source "{source}", which is not defined')
        for type_ in route.types:
            if type_ != "*" and type_ not in events.EVENT_TYPES:
                self.fail(
                    where, f'names event type "{type_}"; known: ' + ", ".join(events.EVENT_TYPES)
                )

    # -- retention and durable outputs (issue 13) ------------------------------------------

    def retention(self, table: Mapping[str, Any]) -> RetentionSettings:
        self.check_keys("retention", table, RETENTION_KEYS)
        value = table.get("max_age", DEFAULT_MAX_AGE)
        try:
            seconds = parse_age(value)
        except ValueError as exc:
            self.fail("retention", f"max_age {exc}")
            return RetentionSettings()
        return RetentionSettings(str(value), seconds)

    def check_outputs_from(
        self, sinks: Mapping[str, SinkSettings], routes: Sequence[Route]
    ) -> None:
        """`outputs_from` must name an s3 sink that mirrors outputs and that is routed every
        event the waiting sink is: else the waiting sink would send links that expire."""
        for sink in sinks.values():
            mirror_name = sink.outputs_from
            if mirror_name is None:
                continue
            where = f"sinks.{sink.name}"
            mirror = sinks.get(mirror_name)
            if mirror is None or mirror.type != "s3" or mirror_name == sink.name:
                self.fail(
                    where,
                    f'outputs_from = "{mirror_name}" must name another sink of type "s3" '
                    "with mirror_outputs = true",
                )
                continue
            if mirror.options.get("mirror_outputs") is not True:
                self.fail(
                    where,
                    f'outputs_from = "{mirror_name}": set mirror_outputs = true in '
                    f"[sinks.{mirror_name}], or it has no copies to send",
                )
            for i, route in enumerate(routes):
                if sink.name in route.sinks and not _covered(route, mirror_name, routes):
                    self.fail(
                        f"routes[{i}]",
                        f'sends to "{sink.name}", which takes its outputs from '
                        f'"{mirror_name}", but no route sends these sources and types to '
                        f'"{mirror_name}"; add "{mirror_name}" to this route\'s sinks',
                    )


def _covered(route: Route, sink: str, routes: Sequence[Route]) -> bool:
    """Whether some route sends every (source, type) that `route` matches to `sink`."""

    def covers(mine: tuple[str, ...], theirs: tuple[str, ...]) -> bool:
        return "*" in theirs or ("*" not in mine and set(mine) <= set(theirs))

    return any(
        sink in other.sinks
        and covers(route.sources, other.sources)
        and covers(route.types, other.types)
        for other in routes
    )
