"""The web UI's pages and form actions under /ui (server-rendered, Jinja2, plain forms).

What it needs from the running service is named in `Ui.__init__` and nothing else: the store
(the same read paths as the admin API), the settings (sources, sinks, token), the delivery
runners (breaker state, wake), the poller (watch) and the router (for receiver.replay.Replayer).

Every page needs a session (receiver.ui.session); every POST also needs the session's CSRF
token and, when the browser sends Origin or Referer, our own origin. Errors the service raises
on purpose (receiver.errors) become an HTML page with their status, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from receiver.core import jsonx, masking
from receiver.core.errors import (
    BodyTooLarge,
    HookyardError,
    InvalidRequest,
    NotFound,
    PayloadInvalid,
    RequestTimeout,
    StoreUnavailable,
    UnsupportedMediaType,
)
from receiver.core.events import EVENT_TYPES, TERMINAL_STATUSES
from receiver.poller import NotPollable
from receiver.replay import ReplayRequest, event_filter
from receiver.service import Service
from receiver.store import JOB_STATES, EventFilter
from receiver.ui import views
from receiver.ui.session import COOKIE, Session, Sessions

log = structlog.get_logger("hookyard.ui")

PAGE = 50  # rows per page
STATS_CAP = 100_000  # counts on the sinks page stop here (a page view must stay cheap)
MAX_FORM_BYTES = 16 * 1024
FORM_TIMEOUT_S = 10.0
FILTERS = ("source", "type", "job_id", "since", "until")
MAX_SHOWN_CHARS = 200_000  # of a pretty-printed payload; the admin API has the whole of it
_EVENT_FIELDS = dict.fromkeys(
    ("job_id", "status", "error", "cost", "model", "via", "provider", "received_at")
)
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_ID = 2**63 - 1  # a delivery id (SQLite's INTEGER, PostgreSQL's bigint)

DONE = {  # ?done= after a form action: fixed texts, only the count comes from the URL
    "replay": "Replay queued: {n} new deliveries.",
    "retry": "Retry queued: the delivery is pending again and is sent now.",
    "pending": "That delivery is pending already; it is sent when due.",
    "replay-dead": "Replay queued: {n} new deliveries of dead letters.",
    "watching": "Watching the job: it is polled until it ends.",
    "watched": "That job was watched already; nothing changed.",
    "signed-out": "Signed out.",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Ctx:
    """The signed-in visitor: their session and the CSRF token forms must carry."""

    session: Session
    csrf: str


Page = Callable[[Request, Ctx], Awaitable[Response]]


class Ui:
    """The pages, bound to the parts of the service they read and act on (and only those,
    so the UI is easy to re-point when the service changes shape)."""

    def __init__(self, service: Service, admin_token: str) -> None:
        self.store = service.store
        self.settings = service.settings
        self.delivery = service.delivery
        self.poller = service.poller
        self.replayer = service.replayer
        self.sessions = Sessions(admin_token)
        self.env = _environment(masking.ordered(self.settings.secret_values()))

    # -- plumbing ------------------------------------------------------------------------------

    def render(
        self, request: Request, template: str, status: int = 200, **values: Any
    ) -> Response:
        ctx: Ctx | None = values.pop("ctx", None)
        html = self.env.get_template(template).render(
            request_path=request.url.path,
            csrf=ctx.csrf if ctx else None,
            signed_in=ctx is not None,
            done=_done_message(request.query_params),
            **values,
        )
        return HTMLResponse(html, status_code=status)

    def page(self, handler: Page) -> Callable[[Request], Awaitable[Response]]:
        """A GET page: signed-in visitors only; others go to the sign-in form."""

        async def guarded(request: Request) -> Response:
            ctx = self.ctx(request)
            if ctx is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                query = urllib.parse.urlencode({"next": target})
                return RedirectResponse(f"/ui/login?{query}", status_code=303)
            return await self.answer(request, ctx, handler)

        return guarded

    def action(self, handler: Page) -> Callable[[Request], Awaitable[Response]]:
        """A state-changing POST: session, same origin and the session's CSRF token, or 403."""

        async def guarded(request: Request) -> Response:
            ctx = self.ctx(request)
            if ctx is None:
                return self.refuse(request, "You are not signed in (or the session expired).")
            form = await self.posted_form(request, ctx)
            if isinstance(form, Response):
                return form
            if not self.sessions.csrf_ok(ctx.session, form.get("csrf")):
                return self.refuse(request, "The form's security token does not match.")
            request.state.form = form
            return await self.answer(request, ctx, handler)

        return guarded

    async def posted_form(self, request: Request, ctx: Ctx | None) -> dict[str, str] | Response:
        """A POST's form, or the answer that turns it away: 403 when it was sent from another
        site, the error page when the body is not a readable form."""
        if not same_origin(request):
            return self.refuse(request, "This form was sent from another site.")
        try:
            return await read_form(request)
        except HookyardError as exc:
            return self.error(request, exc, ctx)

    async def answer(self, request: Request, ctx: Ctx, handler: Page) -> Response:
        try:
            return await handler(request, ctx)
        except StoreUnavailable as exc:
            log.error("ui.store_unavailable", path=request.url.path, error=exc.message)
            return self.error(request, StoreUnavailable("The store does not answer; try again."),
                              ctx)
        except HookyardError as exc:
            return self.error(request, exc, ctx)

    def ctx(self, request: Request) -> Ctx | None:
        session = self.sessions.read(request.cookies.get(COOKIE))
        return None if session is None else Ctx(session, self.sessions.csrf_token(session))

    def refuse(self, request: Request, why: str) -> Response:
        log.warning("ui.refused", path=request.url.path, reason=why)
        return self.render(request, "error.html", 403, title="Refused", message=why, ctx=None)

    def error(self, request: Request, exc: HookyardError, ctx: Ctx | None) -> Response:
        return self.render(
            request, "error.html", exc.status, title="Not done", message=exc.message, ctx=ctx
        )

    # -- sign-in -------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if self.ctx(request) is not None:
            return RedirectResponse(_next(request.query_params.get("next")), status_code=303)
        target = _next(request.query_params.get("next"))
        return self.render(request, "login.html", next=target, error=None)

    async def login(self, request: Request) -> Response:
        form = await self.posted_form(request, None)
        if isinstance(form, Response):
            return form
        target = _next(form.get("next"))
        if not self.sessions.token_matches(form.get("token", "")):
            log.warning("ui.sign_in_failed", client=request.client.host if request.client else None)
            return self.render(
                request,
                "login.html",
                401,
                next=target,
                error="That is not the admin token (server.admin_token in the config).",
            )
        session, cookie = self.sessions.new()
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=self.sessions.lifetime_s,
            path="/ui",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        log.info("ui.signed_in", expires_at=session.expires_at)
        return response

    async def logout(self, request: Request, ctx: Ctx) -> Response:
        response = RedirectResponse("/ui/login?done=signed-out", status_code=303)
        response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
        return response

    # -- events --------------------------------------------------------------------------------

    async def events(self, request: Request, ctx: Ctx) -> Response:
        filters = _filters(request.query_params)
        before: str | None = None
        error: str | None = None
        try:
            before = _event_id(request.query_params.get("before"), "before")
            events = await self.event_page(event_filter(filters), before, PAGE + 1)
        except InvalidRequest as exc:
            events, error = [], exc.message
        more = events[PAGE - 1]["id"] if len(events) > PAGE else None
        rows = await self.rows(events[:PAGE])
        return self.render(
            request,
            "events.html",
            400 if error else 200,
            ctx=ctx,
            error=error,
            rows=rows,
            values={key: filters.get(key, "") for key in FILTERS},
            sources=sorted(self.settings.sources),
            types=EVENT_TYPES,
            older=_query({**filters, "before": more}) if more else None,
            live=None if before else _query(filters),
            first=_query(filters),
            paged=before is not None,
        )

    async def event_rows(self, request: Request, ctx: Ctx) -> Response:
        """The first page's rows alone: what the events page polls for to stay live."""
        where = event_filter(_filters(request.query_params))
        rows = await self.rows(await self.event_page(where, None, PAGE))
        return self.render(request, "_event_rows.html", ctx=ctx, rows=rows)

    async def rows(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        statuses = await self.store.latest_statuses([e["id"] for e in events])
        return [{"event": e, "glance": views.glance(statuses.get(e["id"]))} for e in events]

    async def event_page(
        self, where: EventFilter, before: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """list_events, steered onto the indexes (measured in bench/ui): a job id without a
        source is looked up per source (a job's events are found by source and job id); the
        store bounds `since` and `until` by the event id itself."""
        if where.job_id is not None and where.source is None:
            found: list[dict[str, Any]] = []
            for source in sorted(self.settings.sources):
                per_source = dataclasses.replace(where, source=source)
                found += await self.store.list_events(per_source, before, limit)
            return sorted(found, key=lambda e: str(e["id"]), reverse=True)[:limit]
        return await self.store.list_events(where, before, limit)

    async def event(self, request: Request, ctx: Ctx) -> Response:
        event_id = request.path_params["event_id"]
        event = await self.store.get_event(event_id)
        if event is None:
            raise NotFound(f"There is no event {event_id!r}.")
        deliveries = event.pop("deliveries")
        raw = event.pop("raw")
        stored = dict(event)
        event = {**_EVENT_FIELDS, **event}  # a row written by an older version may lack some
        routed = self.replayer.route(event["source"], event["type"])
        return self.render(
            request,
            "event.html",
            ctx=ctx,
            event=event,
            raw=views.shown_json(raw, MAX_SHOWN_CHARS),
            normalized=views.shown_json(stored, MAX_SHOWN_CHARS),
            outputs=views.outputs(event, await self.mirror_links(event.get("mirrors"))),
            deliveries=deliveries,
            routed=routed,
            sinks=sorted(self.settings.sinks),
        )

    async def mirror_links(self, mirrors: Any) -> dict[int, str]:
        """Output index → a working link to its mirrored copy, made by the s3 sink that holds
        it (public_base_url + key, or a fresh presigned link). Only where this process runs
        that sink (a web-only process shows the provider's URLs)."""
        links: dict[int, str] = {}
        for mirror in mirrors if isinstance(mirrors, list) else []:
            runner = self.delivery.runners.get(str(mirror.get("sink")))
            link = getattr(runner.sink, "link", None) if runner is not None else None
            if link is None or int(mirror.get("index", -1)) in links:
                continue
            with contextlib.suppress(Exception):  # no link: the provider's URL is shown
                links[int(mirror["index"])] = await link(mirror["bucket"], mirror["key"])
        return links

    async def replay_event(self, request: Request, ctx: Ctx) -> Response:
        event_id = request.path_params["event_id"]
        sink = request.state.form.get("sink") or None
        made = await self.replayer.replay_event(event_id, [sink] if sink else None)
        self.delivery.wake(s for _, s in made)
        log.info("ui.replayed", event_id=event_id, deliveries=len(made))
        return _back(f"/ui/events/{_quote(event_id)}", "replay", len(made), "#deliveries")

    async def retry(self, request: Request, ctx: Ctx) -> Response:
        raw = request.path_params["delivery_id"]
        try:
            delivery_id = jsonx.whole_number("delivery id", raw, 1, MAX_ID)
        except jsonx.NumberInvalid:
            delivery_id = 0  # no such delivery: the store's KeyError makes it a 404
        try:
            row, changed = await self.delivery.retry(delivery_id, time.time())
        except KeyError:
            raise NotFound(f"There is no delivery {raw!r}.") from None
        if changed:
            log.info("ui.retried", delivery_id=delivery_id)
        target = f"/ui/events/{_quote(row['event_id'])}"
        return _back(target, "retry" if changed else "pending", None, "#deliveries")

    # -- sinks ---------------------------------------------------------------------------------

    async def sinks(self, request: Request, ctx: Ctx) -> Response:
        names = sorted(self.settings.sinks)
        now = time.time()
        stats = await self.store.sink_stats(names, now - 3600, STATS_CAP)
        rows = [
            {
                "name": name,
                "type": self.settings.sinks[name].type,
                "stats": stats[name],
                "pending": views.count(stats[name].pending, STATS_CAP),
                "oldest": _age_since(stats[name].oldest_pending_at, now),
                "breaker": self.breaker(name),
            }
            for name in names
        ]
        return self.render(request, "sinks.html", ctx=ctx, rows=rows, cap=STATS_CAP)

    def breaker(self, sink: str) -> dict[str, Any]:
        runner = self.delivery.runners.get(sink)
        if runner is None:
            return {"state": "unknown", "text": "not delivered by this process"}
        b = runner.breaker
        if b.open_until is None:
            return {"state": "closed", "text": f"closed ({b.failures} failures in a row)"}
        if b.probing:
            return {"state": "probing", "text": "half-open: one probe under way"}
        wait = b.wait_s() or 0.0
        return {"state": "open", "text": f"open: paused, next probe in {views.age(wait)}"}

    async def sink(self, request: Request, ctx: Ctx) -> Response:
        name = self.known_sink(request.path_params["sink"])
        after = _whole(request.query_params.get("after"), "after")
        rows = await self.store.list_deliveries("dead", name, after, PAGE + 1)
        more = rows[PAGE - 1]["id"] if len(rows) > PAGE else None
        rows = rows[:PAGE]
        latest = await self.store.latest_statuses([r["event_id"] for r in rows])
        for row in rows:
            row["latest"] = latest.get(row["event_id"], {}).get(name, "dead")
        return self.render(
            request, "sink.html", ctx=ctx, name=name, rows=rows, after=after, more=more
        )

    async def replay_dead_form(self, request: Request, ctx: Ctx) -> Response:
        name = self.known_sink(request.path_params["sink"])
        _, counts = await self.replayer.plan(self.dead_of(name))
        return self.render(request, "replay_dead.html", ctx=ctx, name=name, counts=counts)

    async def replay_dead(self, request: Request, ctx: Ctx) -> Response:
        name = self.known_sink(request.path_params["sink"])
        scope, _ = await self.replayer.plan(self.dead_of(name))
        done = await self.replayer.run(scope)
        self.delivery.wake([name])
        log.info("ui.replayed_dead", sink=name, deliveries=done.deliveries)
        return _back(f"/ui/sinks/{_quote(name)}", "replay-dead", done.deliveries)

    def known_sink(self, name: str) -> str:
        if name not in self.settings.sinks:
            raise NotFound(f"There is no sink {name!r} in the config.")
        return name

    @staticmethod
    def dead_of(sink: str) -> ReplayRequest:
        """Deliveries to `sink` whose latest attempt is dead, as `hookyard replay --dead`."""
        return ReplayRequest(EventFilter(), delivery_status="dead", sinks=(sink,), dry_run=True)

    # -- watched jobs --------------------------------------------------------------------------

    async def jobs(self, request: Request, ctx: Ctx) -> Response:
        return await self.jobs_page(request, ctx)

    async def jobs_page(
        self, request: Request, ctx: Ctx, status: int = 200, **form: str
    ) -> Response:
        query = request.query_params
        source = query.get("source") or None
        state = query.get("state") or None
        if state is not None and state not in JOB_STATES:
            raise InvalidRequest(f"state must be one of {', '.join(JOB_STATES)}.")
        after = _job_cursor(query.get("after"))
        jobs = await self.store.list_jobs(source, state, after, PAGE + 1)
        last = jobs[PAGE - 1] if len(jobs) > PAGE else None
        after_last = f"{last.source}/{last.job_id}" if last else None
        more = {"source": source, "state": state, "after": after_last}
        return self.render(
            request,
            "jobs.html",
            status,
            ctx=ctx,
            jobs=jobs[:PAGE],
            now=time.time(),
            source=source or "",
            state=state or "",
            states=JOB_STATES,
            sources=sorted(self.settings.sources),
            more=_query(more) if last else None,
            form={"error": None, "source": "", "job_id": "", **form},
        )

    async def watch(self, request: Request, ctx: Ctx) -> Response:
        form: dict[str, str] = request.state.form
        source, job_id = form.get("source", ""), form.get("job_id", "").strip()
        try:
            deadline = _deadline(form.get("deadline_s", ""))
            if not source or not job_id:
                raise InvalidRequest("Choose a source and give the job id.")
            _, new = await self.poller.watch(source, job_id, deadline_s=deadline)
        except (InvalidRequest, NotPollable) as exc:
            message = exc.message if isinstance(exc, HookyardError) else str(exc)
            return await self.jobs_page(
                request, ctx, 400, error=message, source=source, job_id=job_id
            )
        log.info("ui.watching", source=source, job_id=job_id, new=new)
        return _back("/ui/jobs", "watching" if new else "watched", None)


def _environment(secrets: tuple[str, ...] = ()) -> Environment:
    """The templates' environment; `secrets` (from masking.ordered) are masked out of the error
    texts shown (`masked`), as the admin API does: attempt errors stored before they were
    masked, and jobs' poll errors, which may quote a source's base_url."""
    env = Environment(
        loader=PackageLoader("receiver.ui", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        utc=views.utc,
        received=views.received,
        relative=views.relative,
        age=views.age,
        quote=_quote,
        masked=lambda text: None if text is None else masking.mask_secrets(str(text), secrets),
    )
    env.globals.update(status_label=views.status_label, terminal=TERMINAL_STATUSES)
    return env


def same_origin(request: Request) -> bool:
    """False when Origin or Referer names another site (or is opaque); absent is allowed:
    SameSite=Strict already keeps the cookie off cross-site requests.

    "Our" host is the Host header or, behind a proxy that rewrites Host, X-Forwarded-Host: a
    cross-site page can make a browser send neither of its choosing."""
    ours = {request.headers.get("host", "").lower()}
    forwarded = request.headers.get("x-forwarded-host")
    if forwarded:
        ours.add(forwarded.split(",")[0].strip().lower())
    for name in ("origin", "referer"):
        value = request.headers.get(name)
        if value is None:
            continue
        try:
            netloc = urllib.parse.urlsplit(value).netloc.lower()
        except ValueError:
            return False
        if not netloc or netloc not in ours:
            return False
    return True


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body, at most MAX_FORM_BYTES and FORM_TIMEOUT_S to arrive."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("Send the form as application/x-www-form-urlencoded.")
    body = bytearray()
    try:
        async with asyncio.timeout(FORM_TIMEOUT_S):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_FORM_BYTES:
                    raise BodyTooLarge(f"The form is larger than {MAX_FORM_BYTES} bytes.")
    except TimeoutError:
        raise RequestTimeout("The form did not arrive in time.") from None
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20
        )
    except (UnicodeDecodeError, ValueError):
        raise PayloadInvalid("The form is not UTF-8 text with at most 20 fields.") from None
    return dict(pairs)


def _filters(query: Mapping[str, str]) -> dict[str, str]:
    """The filters given a value (an empty form field means no filter)."""
    return {key: query[key].strip() for key in FILTERS if query.get(key, "").strip()}


def _query(values: Mapping[str, str | None]) -> str:
    return urllib.parse.urlencode({k: v for k, v in values.items() if v})


def _event_id(value: str | None, name: str) -> str | None:
    if not value:
        return None
    if not _ID.fullmatch(value):
        raise InvalidRequest(f"{name} must be an event id such as evt_01J….")
    return value


def _whole(value: str | None, name: str) -> int | None:
    if not value:
        return None
    try:
        return jsonx.whole_number(name, value, 0, MAX_ID)
    except jsonx.NumberInvalid:
        raise InvalidRequest(f"{name} must be a delivery id (a whole number).") from None


def _job_cursor(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    source, sep, job_id = value.partition("/")
    if not sep:
        raise InvalidRequest("after must be source/job_id, as the Next link gives it.")
    return source, job_id


def _deadline(value: str) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        seconds = jsonx.decimal("deadline", value, 0, 30 * 86400)
    except jsonx.NumberInvalid:
        seconds = 0.0
    if not seconds:
        raise InvalidRequest("The deadline is a number of seconds, above 0 and at most 30 days.")
    return seconds


def _age_since(at: float | None, now: float) -> str | None:
    return None if at is None else views.age(now - at)


def _next(value: str | None) -> str:
    """Where to go after signing in: a path under /ui only (never another site)."""
    if value and value.startswith("/ui/") and not value.startswith("/ui//") and "\\" not in value:
        return value
    return "/ui/events"


def _done_message(query: Mapping[str, str]) -> str | None:
    template = DONE.get(query.get("done", ""))
    if template is None:
        return None
    try:
        n: int | str = jsonx.whole_number("n", query.get("n", ""), 0, 10**9)
    except jsonx.NumberInvalid:
        n = "some"
    return template.format(n=n)


def _back(path: str, done: str, n: int | None, anchor: str = "") -> Response:
    query = _query({"done": done, "n": None if n is None else str(n)})
    return RedirectResponse(f"{path}?{query}{anchor}", status_code=303)


def _quote(value: object) -> str:
    return urllib.parse.quote(str(value), safe="")

