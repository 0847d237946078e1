"""Shared by the admin API, OpenAPI and CLI tests: a config with an admin token and an HTTP sink
on a FakeSink, signed Rendergrid webhooks, and a client that sends the token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from receiver import settings as settings_mod
from tests.fakes import FakeSink
from tests.support import RENDERFUL_SECRET, RENDERGRID_SECRET, Server, fixture, signed_headers

TOKEN = "admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

CONFIG = """
[server]
database = "sqlite:///{tmp}/hookyard.db"
{token_line}

[sources.rendergrid]
provider = "rendergrid"
secrets = ["{rg_secret}"]
{rendergrid_extra}

[sources.renderful]
provider = "renderful"
secrets = ["{rf_secret}"]
signature = {{ header = "X-Renderful-Signature" }}

[sinks.hook]
type = "http"
url = "{sink_url}/hook"
retry_schedule_s = [0.1]
max_attempts = 2
{hook_extra}

[sinks.log]
type = "jsonl"
path = "{tmp}/events.jsonl"

[[routes]]
sources = ["*"]
types = ["generation.completed"]
sinks = ["hook"]

[[routes]]
sources = ["*"]
types = ["*"]
sinks = ["log"]
"""


def write_config(
    tmp: Path, sink_url: str, *, token: str | None = TOKEN, hook_extra: str = "",
    rendergrid_extra: str = "",
) -> Path:
    """The admin stack's config: `hook_extra` and `rendergrid_extra` are TOML lines added to the
    hook sink and the rendergrid source (say, an api_key and base_url for polling)."""
    path = tmp / "hookyard.toml"
    path.write_text(
        CONFIG.format(
            tmp=tmp,
            token_line=f'admin_token = "{token}"' if token else "",
            rg_secret=RENDERGRID_SECRET,
            rf_secret=RENDERFUL_SECRET,
            sink_url=sink_url,
            hook_extra=hook_extra,
            rendergrid_extra=rendergrid_extra,
        )
    )
    return path


def creation(job: str, status: str = "completed") -> bytes:
    return json.dumps(
        {"event": f"creation.{status}", "id": job, "status": status,
         "result_urls": [f"https://cdn.example/{job}.jpg"], "cost": 0.1}
    ).encode()


def post(server: Server, config_path: Path, body: bytes, source: str = "rendergrid") -> str:
    return post_all(server, config_path, [body], source)[0]


def post_all(server: Server, config_path: Path, bodies: list[bytes], source: str = "rendergrid"
             ) -> list[str]:
    """Send signed webhooks one after the other (so their ids sort in sending order)."""
    config = settings_mod.load(str(config_path))
    ids = []
    with httpx.Client(base_url=server.url) as client:
        for body in bodies:
            r = client.post(f"/hooks/{source}", content=body,
                            headers=signed_headers(config, source, body))
            assert r.status_code == 200, r.text
            ids.append(str(r.json()["event_id"]))
    return ids


def post_jobs(server: Server, config_path: Path, jobs: list[str], status: str = "completed"
              ) -> list[str]:
    return post_all(server, config_path, [creation(job, status) for job in jobs])


def post_renderful(server: Server, config_path: Path) -> str:
    return post(server, config_path, fixture("renderful", "completed_nested.json"), "renderful")


def api(server: Server, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def delivered_ids(sink: FakeSink) -> list[str]:
    """The webhook-id of every request the HTTP sink got, in arrival order."""
    return [r.headers["webhook-id"] for r in sink.requests if r.path == "/hook"]


def statuses(client: httpx.Client, **query: Any) -> list[str]:
    r = client.get("/v1/deliveries", params={"limit": 500, **query})
    assert r.status_code == 200, r.text
    return [d["status"] for d in r.json()["items"]]
