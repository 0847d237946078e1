"""Configuration: interpolation, defaults, and every mistake stopping start-up with a clear fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from receiver import settings as settings_mod
from receiver.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "hookyard.example.toml"

GOOD = """
[server]
database = "sqlite:///./x.db"
admin_token = "${TOKEN}"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["${RG_SECRET}", "old-secret"]

[sinks.log]
type = "jsonl"
path = "./events.jsonl"

[[routes]]
sources = ["rendergrid"]
types = ["generation.completed"]
sinks = ["log"]
"""
ENV = {"TOKEN": "t" * 32, "RG_SECRET": "from-the-environment"}


def load_text(
    tmp_path: Path, text: str, env: dict[str, str] | None = None
) -> settings_mod.Settings:
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return settings_mod.load(str(path), ENV if env is None else env)


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, env)
    message = info.value.message
    assert str(tmp_path / "cfg.toml") in message  # every problem names the file
    return message


def test_good_config_interpolates_env_and_applies_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, GOOD)
    source = config.sources["rendergrid"]
    assert source.secrets == ("from-the-environment", "old-secret")
    assert source.tolerance_s == 300 and source.fallback_poll_after_s == 300
    assert source.signature["header"] == "X-Webhook-Signature-256"  # the preset
    assert config.server.admin_token == "t" * 32
    assert config.server.port == 8000 and config.server.max_body_bytes == 1_048_576
    sink = config.sinks["log"]
    assert sink.retry_schedule_s[:3] == (5, 30, 120) and sink.max_attempts == 11
    assert config.routes[0].matches("rendergrid", "generation.completed")
    assert not config.routes[0].matches("rendergrid", "generation.failed")


def test_example_config_loads_as_is() -> None:
    config = settings_mod.load(str(EXAMPLE), {})
    assert set(config.sources) == {"rendergrid", "replicate"}
    assert config.server.database.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (GOOD, {"TOKEN": "t" * 32}, "environment variable RG_SECRET is not set"),
        (
            GOOD.replace("secrets =", "secret ="),
            ENV,
            'unknown key "secret"; did you mean "secrets"?',
        ),
        (GOOD + "\n[bogus]\n", ENV, 'unknown key "bogus"'),
        (
            GOOD.replace('provider = "rendergrid"', 'provider = "nope"'),
            ENV,
            'provider "nope" is unknown',
        ),
        (
            GOOD.replace('sinks = ["log"]', 'sinks = ["team"]'),
            ENV,
            'names sink "team", which is not defined; add [sinks.team]',
        ),
        (
            GOOD.replace('sources = ["rendergrid"]', 'sources = ["other"]'),
            ENV,
            'names source "other"',
        ),
        (
            GOOD.replace('types = ["generation.completed"]', 'types = ["generation.done"]'),
            ENV,
            'names event type "generation.done"',
        ),
        (GOOD.replace('type = "jsonl"', 'type = "kafka"'), ENV, 'sink type "kafka" is unknown'),
        (GOOD.replace('path = "./events.jsonl"', ""), ENV, 'path is required for a "jsonl" sink'),
        (GOOD.replace('secrets = ["${RG_SECRET}", "old-secret"]', ""), ENV, "secrets"),
        (
            GOOD.replace(
                'provider = "rendergrid"',
                'provider = "rendergrid"\nsignature = { scheme = "rot13" }',
            ),
            ENV,
            "rot13",
        ),
        (
            GOOD.replace(
                'provider = "rendergrid"',
                'provider = "rendergrid"\nsignature = { scheme = "none" }',
            ),
            ENV,
            'only allowed together with confirm = "fetch"',
        ),
        (
            GOOD.replace('provider = "rendergrid"', 'provider = "generic"'),
            ENV,
            'provider "generic" has no signing preset',
        ),
        (
            GOOD.replace('database = "sqlite:///./x.db"', 'database = "mysql://x"'),
            ENV,
            "database must look like sqlite:///",
        ),
        (GOOD.replace("[server]", '[server]\nport = "eighty"'), ENV, "port must be a whole number"),
        (GOOD, {**ENV, "TOKEN": "short"}, "admin_token must be a string of at least 16"),
        (
            GOOD.replace("[sources.rendergrid]", '[sources."Render Grid"]'),
            ENV,
            "lower-case letters",
        ),
        (
            GOOD.replace('type = "jsonl"', 'type = "jsonl"\nretry_schedule_s = []'),
            ENV,
            "retry_schedule_s must be a non-empty list",
        ),
        (GOOD.replace('provider = "rendergrid"', 'provider = "renderful"'), ENV, "header"),
        ("[server\n", ENV, "not valid TOML"),
    ],
    ids=[
        "missing-env",
        "unknown-source-key",
        "unknown-top-key",
        "unknown-provider",
        "route-unknown-sink",
        "route-unknown-source",
        "route-unknown-type",
        "unknown-sink-type",
        "sink-missing-key",
        "no-secrets",
        "unknown-scheme",
        "none-without-confirm",
        "generic-without-scheme",
        "bad-database",
        "bad-port",
        "short-admin-token",
        "bad-source-name",
        "empty-retry-schedule",
        "renderful-without-header",
        "bad-toml",
    ],
)
def test_mistakes_stop_start_up_naming_file_key_and_fix(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    assert expected in problems(tmp_path, text, env)


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    text = GOOD.replace("secrets =", "secret =").replace('sinks = ["log"]', 'sinks = ["team"]')
    message = problems(tmp_path, text)
    assert 'unknown key "secret"' in message and 'names sink "team"' in message


def test_missing_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        settings_mod.load(str(tmp_path / "absent.toml"))


def test_config_path_comes_from_flag_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKYARD_CONFIG", "/from/env.toml")
    assert settings_mod.config_path("/from/flag.toml") == "/from/flag.toml"
    assert settings_mod.config_path(None) == "/from/env.toml"
    monkeypatch.delenv("HOOKYARD_CONFIG")
    with pytest.raises(ConfigError, match="--config"):
        settings_mod.config_path(None)


def hookyard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )


def test_check_prints_what_would_run_without_secrets() -> None:
    result = hookyard("check", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "POST http://127.0.0.1:8000/hooks/rendergrid" in result.stdout
    assert "dev-rendergrid-secret-change-me" not in result.stdout
    as_json = json.loads(hookyard("check", "--config", str(EXAMPLE), "--json").stdout)
    assert as_json["sources"]["rendergrid"] == {
        "provider": "rendergrid",
        "scheme": "hmac",
        "secrets": 1,
        "webhook_path": "/hooks/rendergrid",
        "confirm": None,
    }


def test_check_reports_errors_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('sinks = ["log"]', 'sinks = ["team"]'))
    result = hookyard(
        "check",
        "--config",
        str(bad),
        env={"TOKEN": "t" * 32, "RG_SECRET": "x" * 8, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert 'names sink "team"' in result.stderr and str(bad) in result.stderr


def test_serve_refuses_a_bad_config_before_listening(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD)
    result = hookyard("serve", "--config", str(bad), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "TOKEN" in result.stderr and "listening" not in result.stderr


def test_sign_rejects_an_unknown_source() -> None:
    result = hookyard("sign", "--config", str(EXAMPLE), "--source", "nope", "--body-file", "-")
    assert result.returncode == 2 and "no source named 'nope'" in result.stderr
