"""Shared fixtures. Plain helpers (wait_for, make_event, signed_headers, the store readers, the
`hookyard serve` process) live in tests/support.py; fake servers in tests/fakes.py and
tests/fake_providers.py.

* `config` — Settings from support.BASE_CONFIG, paths inside tmp_path; `write_config(text=None,
  **values)` writes another template (or BASE_CONFIG with other values) there.
* `signed(source, body)` — headers that make `body` verify for a source of `config`.
* `store` — an open SqliteStore on tmp_path/s.db, closed after the test.
* `app` — (client, service): the app built by create_app as `hookyard serve` builds it, with
  its lifespan running, on `config`.
* `sink` — a FakeSink answering 200; `http` — an httpx.AsyncClient for sinks under test.
* `moto`, `files`, `aws_env`, `bucket` — moto's S3 server, a static file server, dummy AWS
  credentials, and a fresh bucket; `make_s3(timeout_s=5, **options)` builds S3 sinks on that
  bucket (prefix "hookyard/") and closes them after the test.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from handlers.sinks import s3
from handlers.sinks.base import SinkContext
from receiver import settings as settings_mod
from receiver.store.sqlite import SqliteStore
from tests import support
from tests.fakes import FakeSink, FileServer, MotoS3

WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    return functools.partial(support.write_config, tmp_path)


@pytest.fixture
def config(write_config: WriteConfig) -> settings_mod.Settings:
    return settings_mod.load(str(write_config()))


@pytest.fixture
def signed(config: settings_mod.Settings) -> support.Signed:
    return functools.partial(support.signed_headers, config)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(str(tmp_path / "s.db"))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def app(config: settings_mod.Settings) -> AsyncIterator[support.App]:
    async with support.app_client(config) as running:
        yield running


@pytest.fixture
def sink() -> Iterator[FakeSink]:
    with FakeSink() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with MotoS3() as server:
        yield server


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials from the environment; no shared files, no instance metadata calls."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", MotoS3.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", MotoS3.SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


_buckets = itertools.count()


@pytest.fixture
def bucket(moto: MotoS3, aws_env: None) -> str:
    name = f"renders-{next(_buckets)}"
    with moto.client() as client:
        client.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def make_s3(
    moto: MotoS3, bucket: str, http: httpx.AsyncClient
) -> AsyncIterator[Callable[..., s3.S3Sink]]:
    sinks: list[s3.S3Sink] = []

    def build(timeout_s: float = 5.0, **options: Any) -> s3.S3Sink:
        options = {"bucket": bucket, "prefix": "hookyard/", "endpoint_url": moto.endpoint_url,
                   **options}
        sink = s3.create("archive", options, SinkContext(http=http, timeout_s=timeout_s))
        sinks.append(sink)
        return sink

    yield build
    for sink in sinks:
        await sink.aclose()
