"""The operator's web dashboard at /ui: events, one event, sinks, watched jobs.

Server-rendered in the same process (receiver.ui.pages); its one script and stylesheet are files
in this package (static/), served from /ui/static, so there is no build step and no CDN. Off
(404) when the admin API is off, because it signs in with the admin token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, request_response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver.service import Service
from receiver.ui.pages import Ui

Endpoint = Callable[[Request], Awaitable[Response]]

# No inline script or style anywhere: scripts and styles come from /ui/static only. Output
# thumbnails load from the providers' (or the mirror's) http(s) hosts.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: http:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def routes(service: Service) -> list[BaseRoute]:
    """The /ui routes; without an admin token, one route that says how to turn the UI on."""
    token = service.settings.server.admin_token
    if not token:
        return [Route("/ui{rest:path}", _off, methods=["GET", "POST"])]
    ui = Ui(service, token)
    get, post = "GET", "POST"
    pages: list[tuple[str, str, Endpoint]] = [
        (get, "/ui", _to_events),
        (get, "/ui/", _to_events),
        (get, "/ui/login", ui.login_form),
        (post, "/ui/login", ui.login),
        (post, "/ui/logout", ui.action(ui.logout)),
        (get, "/ui/events", ui.page(ui.events)),
        (get, "/ui/events/rows", ui.page(ui.event_rows)),
        (get, "/ui/events/{event_id}", ui.page(ui.event)),
        (post, "/ui/events/{event_id}/replay", ui.action(ui.replay_event)),
        (post, "/ui/deliveries/{delivery_id}/retry", ui.action(ui.retry)),
        (get, "/ui/sinks", ui.page(ui.sinks)),
        (get, "/ui/sinks/{sink}", ui.page(ui.sink)),
        (get, "/ui/sinks/{sink}/replay-dead", ui.page(ui.replay_dead_form)),
        (post, "/ui/sinks/{sink}/replay-dead", ui.action(ui.replay_dead)),
        (get, "/ui/jobs", ui.page(ui.jobs)),
        (post, "/ui/jobs", ui.action(ui.watch)),
    ]
    static = StaticFiles(packages=[("receiver.ui", "static")])
    return [
        *(Route(path, _Secured(endpoint), methods=[method]) for method, path, endpoint in pages),
        Mount("/ui/static", app=_Secured(static, cache="no-cache")),
    ]


async def _off(_: Request) -> PlainTextResponse:
    return PlainTextResponse(
        "The web UI is off because the admin API is: set server.admin_token to turn both on.",
        status_code=404,
    )


async def _to_events(_: Request) -> PlainTextResponse:
    return PlainTextResponse("", status_code=303, headers={"Location": "/ui/events"})


def _headers(cache: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-security-policy", CSP.encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"cache-control", cache.encode()),
    ]


class _Secured:
    """An ASGI app (or a request → response endpoint) with the UI's headers on its answers."""

    def __init__(self, app: StaticFiles | Endpoint, cache: str = "no-store") -> None:
        self.app: ASGIApp = app if isinstance(app, StaticFiles) else request_response(app)
        self.headers = _headers(cache)
        self.names = {name for name, _ in self.headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", ()) if k not in self.names]
                message["headers"] = [*kept, *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)
