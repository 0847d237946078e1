"""The baseline for the ingest benchmark: Starlette with one route that only reads the body.

Same route shape as hookyard (`POST /hooks/{source}`), no middleware, no verification, no
storage. Served by `python -m uvicorn bench.ingest.bare_app:app` with the uvicorn settings
`hookyard serve` uses (see bench/ingest/run.py).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def receive(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"ok": True, "bytes": len(body)})


app = Starlette(routes=[Route("/hooks/{source}", receive, methods=["POST"])])
