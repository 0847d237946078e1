"""PostgreSQL for tests: one throwaway database per test session, emptied between tests.

Point the tests at a server with HOOKYARD_TEST_PG=postgresql://user@host:5432/dbname: that
database is used as is and its hookyard tables are TRUNCATEd between tests, so give it one of
its own (.ci/run creates and drops one per run). Without the variable the tests create a
database on postgresql://postgres@127.0.0.1:5432 and drop it at the end of the session.

An unreachable server fails the PostgreSQL tests when CI=true or HOOKYARD_TEST_PG is set (a
suite that silently tests one backend proves nothing); elsewhere they skip, saying how to run.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from receiver.store.postgres import SCHEMA_VERSION

ENV = "HOOKYARD_TEST_PG"
# The server to create a session database on when ENV is not set (overridable so that the kit's
# own test can aim it at a closed port).
LOCAL_SERVER = os.environ.get(
    "HOOKYARD_TEST_PG_LOCAL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TABLES = ("attempts", "deliveries", "events", "jobs", "leases", "mirrors")
HOW = (
    f"set {ENV}=postgresql://USER@HOST:PORT/DBNAME to a database the tests may empty, or start "
    "PostgreSQL on 127.0.0.1:5432 with user postgres (trust auth); .ci/run does both"
)


def _unreachable(why: str) -> None:
    message = f"PostgreSQL tests cannot reach a server ({why}); {HOW}"
    if os.environ.get("CI", "").lower() == "true" or os.environ.get(ENV):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The URL of an empty-schema PostgreSQL database for this session."""
    given = os.environ.get(ENV)
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, … under pytest -n
    if given and worker is None:
        try:
            psycopg.connect(given, connect_timeout=5).close()
        except psycopg.Error as exc:
            _unreachable(" ".join(str(exc).split()) or repr(exc))
        yield given
        return
    if given:
        # Parallel workers must not empty each other's tables: each gets a database of its
        # own beside the given one (named after it, so .ci/run's cleanup finds it).
        yield from _own_database(given, f"{urlsplit(given).path.lstrip('/')}_{worker}")
        return
    yield from _own_database(LOCAL_SERVER, f"hookyard_test_{uuid.uuid4().hex[:12]}")


def _own_database(server: str, name: str) -> Iterator[str]:
    """A new database `name` on `server` for this session, dropped when it ends."""
    try:
        admin = psycopg.connect(server, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        _unreachable(" ".join(str(exc).split()) or repr(exc))
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # a leftover
        admin.execute(f'CREATE DATABASE "{name}"')  # a name we made: letters, digits, _
    try:
        yield urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_empty(pg_url: str) -> str:
    """`pg_url` with every hookyard table emptied and its id sequences reset."""
    empty(pg_url)
    return pg_url


def empty(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        present = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
        tables = ", ".join(t for t in TABLES if t in present)
        if tables:
            conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        with contextlib.suppress(psycopg.errors.UndefinedTable):
            # a test may leave a "newer" schema behind
            conn.execute("DELETE FROM schema_version WHERE version > %s", (SCHEMA_VERSION,))
