"""The server against a hostile world: fal callbacks for other fal customers, a disk that fills
up mid-append, and (below) connections that send nothing."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from handlers.sinks import jsonl
from receiver import settings as settings_mod
from receiver import signing
from receiver.app import create_app
from receiver.errors import ConfigError, SignatureInvalid
from tests.support import app_client
from tests.test_signing import ED_KEYS, FAL_USER_ID, NOW, fal_headers, jwk

# -- fal: one key set signs for every fal customer --------------------------------------------


def fal_settings(**extra: Any) -> dict[str, Any]:
    return {"scheme": "fal", "jwks": {"keys": [jwk(ED_KEYS[0])]}, **extra}


async def test_fal_user_ids_admit_the_listed_users() -> None:
    verifier = signing.build_verifier(fal_settings(user_ids=["someone", FAL_USER_ID]), [])
    body = b'{"request_id": "r"}'
    verified = await verifier.verify(fal_headers(ED_KEYS[0], NOW, body), body, now=NOW)
    assert verified.scheme == "fal"


async def test_fal_user_ids_refuse_another_fal_customer_without_echoing_the_id() -> None:
    verifier = signing.build_verifier(fal_settings(user_ids=["our-fal-user"]), [])
    body = b'{"request_id": "r"}'
    with pytest.raises(SignatureInvalid) as caught:
        await verifier.verify(fal_headers(ED_KEYS[0], NOW, body), body, now=NOW)
    assert "X-Fal-Webhook-User-Id" in caught.value.message
    assert FAL_USER_ID not in caught.value.message


@pytest.mark.parametrize("bad", ["user-1", [""], [5], {"a": 1}])
def test_fal_user_ids_must_be_a_list_of_ids(bad: object) -> None:
    with pytest.raises(ConfigError, match="user_ids"):
        signing.build_verifier(fal_settings(user_ids=bad), [])


FAL_CONFIG = """
[server]
database = "sqlite:///{db}"

[sources.fal]
provider = "generic"
signature = {{ scheme = "fal", jwks = {{ keys = [{{ kty = "OKP", crv = "Ed25519", x = "{x}" }}] }}{extra} }}
"""  # noqa: E501 (one TOML inline table cannot be wrapped)


def fal_config(tmp: Path, extra: str = "") -> settings_mod.Settings:
    path = tmp / "fal.toml"
    path.write_text(FAL_CONFIG.format(db=tmp / "h.db", x=jwk(ED_KEYS[0])["x"], extra=extra))
    return settings_mod.load(str(path))


async def test_a_fal_webhook_from_another_user_is_a_401_naming_the_header(tmp_path: Path) -> None:
    import time

    config = fal_config(tmp_path, ', user_ids = ["our-fal-user"]')
    body = b'{"request_id": "r1", "status": "OK"}'
    headers = {
        "Content-Type": "application/json",
        **fal_headers(ED_KEYS[0], int(time.time()), body),
    }
    async with app_client(config) as (client, _):
        answer = await client.post("/hooks/fal", content=body, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == "signature_invalid"
    assert "X-Fal-Webhook-User-Id" in answer.json()["message"]
    assert FAL_USER_ID not in answer.text


def test_a_fal_source_without_user_ids_is_warned_about_at_start(tmp_path: Path) -> None:
    with capture_logs() as logs:
        create_app(fal_config(tmp_path))
        create_app(fal_config(tmp_path, ', user_ids = ["our-fal-user"]'))
    warnings = [entry for entry in logs if entry["event"] == "fal.any_user"]
    assert len(warnings) == 1 and warnings[0]["source"] == "fal"
    assert "user_ids" in warnings[0]["fix"]


# -- jsonl: an append is all or nothing ---------------------------------------------------------


def failing_write(fail_after: int) -> Any:
    """os.write that writes `fail_after` bytes of the first call and then fails as a full disk
    does; later calls fail at once."""
    real = os.write
    calls = 0

    def write(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1 and fail_after:
            return real(fd, bytes(data[:fail_after]))
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=200), before=st.integers(0, 3))
def test_a_failed_append_leaves_the_file_as_it_was(
    tmp_path_factory: pytest.TempPathFactory, cut: int, before: int
) -> None:
    path = tmp_path_factory.mktemp("jsonl") / "events.jsonl"
    sink = jsonl.JsonlSink(str(path))
    for n in range(before):
        sink._append(json.dumps({"n": n}).encode() + b"\n")
    original = path.read_bytes() if path.exists() else b""
    line = json.dumps({"n": "new", "pad": "x" * 150}).encode() + b"\n"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(jsonl.os, "write", failing_write(min(cut, len(line) - 1)))
        with pytest.raises(OSError):
            sink._append(line)
    assert path.read_bytes() == original
    sink._append(line)  # the retry, once there is room
    assert [json.loads(x) for x in path.read_bytes().splitlines()][-1]["n"] == "new"


async def test_a_full_disk_mid_write_is_a_retryable_error_and_the_retry_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    sink = jsonl.JsonlSink(str(path))
    await sink.send({"id": "evt_1"})
    monkeypatch.setattr(jsonl.os, "write", failing_write(7))
    with pytest.raises(Exception, match="cannot append"):
        await sink.send({"id": "evt_2", "raw": {"big": "y" * 1000}})
    monkeypatch.undo()
    await sink.send({"id": "evt_2", "raw": {"big": "y" * 1000}})
    await sink.aclose()
    assert [json.loads(x)["id"] for x in path.read_bytes().splitlines()] == ["evt_1", "evt_2"]


async def test_a_line_left_unfinished_by_someone_else_is_not_glued_to(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"id": "evt_0"}\n{"id": "evt_cut')  # e.g. a crash before this rule
    sink = jsonl.JsonlSink(str(path))
    await sink.send({"id": "evt_1"})
    await sink.aclose()
    assert path.read_bytes().splitlines()[-1] == b'{"id":"evt_1"}'
