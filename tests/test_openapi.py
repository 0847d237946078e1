"""The OpenAPI document: valid OpenAPI 3, one entry per admin route, and true to the live API
(schemathesis generates requests from it against a real `hookyard serve`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from receiver import admin, openapi
from receiver.app import create_app
from tests.admin_kit import AUTH, post_jobs, post_renderful, statuses, write_config
from tests.fakes import FakeSink
from tests.support import Server, wait_for

CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
MAX_EXAMPLES = 30


def test_the_document_is_valid_openapi_3() -> None:
    validate(openapi.DOCUMENT)  # raises on any violation


def test_the_document_describes_every_admin_route(tmp_path: Path) -> None:
    from receiver import settings as settings_mod

    config = settings_mod.load(str(write_config(tmp_path, "http://127.0.0.1:9")))
    app = create_app(config)
    routes = [r for r in app.other.routes if isinstance(r, Route) and r.path.startswith("/v1/")]
    served = {
        (r.path.replace(":path}", "}"), m.lower())
        for r in routes
        for m in (r.methods or ())
        if m != "HEAD"
    }
    documented = {(p, m) for p, ops in openapi.PATHS.items() for m in ops}
    assert served == documented
    assert openapi.PATHS["/v1/events"]["get"]["parameters"][-1]["schema"][
        "maximum"
    ] == admin.MAX_PAGE


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("openapi")
    with FakeSink() as sink:
        config = write_config(tmp, sink.url)
        server = Server(config, tmp).start()
        try:
            post_jobs(server, config, ["job-1", "job-2"])
            post_jobs(server, config, ["job-3"], "failed")
            post_renderful(server, config)
            with httpx.Client(base_url=server.url, headers=AUTH) as client:
                wait_for(lambda: statuses(client).count("delivered") == 7, what="deliveries")
            yield server
        finally:
            server.kill()


def test_the_live_document_is_the_module_document(live: Server) -> None:
    assert httpx.get(f"{live.url}/v1/openapi.json").json() == openapi.DOCUMENT


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE,
                                  schemathesis.GenerationMode.NEGATIVE])
def test_schemathesis_finds_no_5xx_and_no_schema_violations(
    live: Server, mode: schemathesis.GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/v1/openapi.json", timeout=10)
    checks = CONFORMANCE if mode is schemathesis.GenerationMode.POSITIVE else [not_a_server_error]
    operations = [result.ok() for result in schema.get_all_operations()]
    # schemathesis leaves out the operation that serves the document it loaded.
    documented = {f"{m.upper()} {p}" for p, ops in openapi.PATHS.items() for m in ops}
    assert {op.label for op in operations} == documented - {"GET /v1/openapi.json"}
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=live.url, headers=AUTH, checks=checks, timeout=10)

        check()
    assert "Traceback" not in live.output()
