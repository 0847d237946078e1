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
from receiver.ui.pages import Page, Ui

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
    # Each path's (GET, POST) endpoints; None where it answers no such method. The signed-in
    # ones are wrapped once below: a GET is a page (others go to the sign-in form), a POST an
    # action (session, same origin and CSRF token). Order matters: /ui/events/rows before
    # /ui/events/{event_id}.
    public: dict[str, tuple[Endpoint | None, Endpoint | None]] = {
        "/ui": (_to_events, None),
        "/ui/": (_to_events, None),
        "/ui/login": (ui.login_form, ui.login),
    }
    signed_in: dict[str, tuple[Page | None, Page | None]] = {
        "/ui/logout": (None, ui.logout),
        "/ui/events": (ui.events, None),
        "/ui/events/rows": (ui.event_rows, None),
        "/ui/events/{event_id}": (ui.event, None),
        "/ui/events/{event_id}/replay": (None, ui.replay_event),
        "/ui/deliveries/{delivery_id}/retry": (None, ui.retry),
        "/ui/sinks": (ui.sinks, None),
        "/ui/sinks/{sink}": (ui.sink, None),
        "/ui/sinks/{sink}/replay-dead": (ui.replay_dead_form, ui.replay_dead),
        "/ui/jobs": (ui.jobs, ui.watch),
    }
    guarded = {
        path: (ui.page(get) if get else None, ui.action(post) if post else None)
        for path, (get, post) in signed_in.items()
    }
    static = StaticFiles(packages=[("receiver.ui", "static")])
    return [
        *(
            Route(path, _Secured(endpoint), methods=[method])
            for path, endpoints in (public | guarded).items()
            for method, endpoint in zip(("GET", "POST"), endpoints, strict=True)
            if endpoint is not None
        ),
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
