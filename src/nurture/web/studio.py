"""nurture studio: a local page where marketing sees every email as subscribers will.

Every email of every sequence in order (delay, subject, preheader, key), the newsletter issues and
the system emails; the selected one rendered for a sample subscriber at desktop (600 px) and phone
(375 px) widths, its plain text, its MIME source and its validation problems; a "send test" form;
a journey view of the dates one subscriber would receive each step in their time zone; an impact
panel saying what the templates on disk would change for the people already in the sequence.

This module holds the app and its routes; the parts are modules of their own: the list of email
files and the templates' stamp (``studio_catalogue``), the validator's findings and helpful error
locations (``studio_checks``), live reload over Server-Sent Events (``studio_events``), the
journey by the planner's own rule (``studio_journey``), the impact panel, the one page that reads
the database (``studio_impact``), and the loopback-only guard (``studio_guard``); the pages' templates and shared context (``studio_pages``).

A local tool: bound to 127.0.0.1, no login, no external resources.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles

from nurture.clock import utcnow
from nurture.config import Settings
from nurture.content.rendering import TEMPLATE_CONTEXT, Rendered, Renderer, RenderError
from nurture.content.sequences import TemplateFormatError
from nurture.people.validation import InvalidInput, normalise_email
from nurture.sending.compose import compose, preview_draft, preview_stream
from nurture.sending.journey import Window
from nurture.sending.transports import NoReply, Transport, Unreachable
from nurture.web.studio_catalogue import Entry, where
from nurture.web.studio_checks import TemplateChecks, helpful, template_frame
from nurture.web.studio_events import TemplateWatcher, event_stream
from nurture.web.studio_guard import LocalOnly
from nurture.web.studio_impact import ImpactReader, impact_router
from nurture.web.studio_journey import plan_journey
from nurture.web.studio_pages import PREVIEW_CSP, StudioPages

__all__ = ["create_studio_app", "run_studio"]

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
COMMON_ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Phoenix", "America/Los_Angeles",
                "America/Anchorage", "Pacific/Honolulu", "Europe/London", "UTC")


@dataclass
class _Studio:
    settings: Settings
    transport: Transport | None
    clock: Callable[[], datetime]
    renderer: Renderer = field(init=False)
    checks: TemplateChecks = field(init=False)
    watcher: TemplateWatcher = field(init=False)
    last_good: dict[str, Rendered] = field(default_factory=dict)
    own_transport: bool = False
    loop: asyncio.AbstractEventLoop | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self.templates_dir = Path(s.templates_dir)
        self.renderer = Renderer(self.templates_dir, clinic=s.clinic, base_url=s.base_url,
                                 consultation_url=s.consultation_url, recheck_seconds=0)
        self.checks = TemplateChecks(s)
        self.watcher = TemplateWatcher(self.templates_dir)
        self.impact = ImpactReader(s)
        self._transport_lock = threading.Lock()

    def close_streams(self) -> None:
        """End the /events streams; callable from any thread (uvicorn's signal handler, a test)."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.watcher.close)  # in the loop: no stream misses it
        else:
            self.watcher.closed = True

    def get_transport(self) -> Transport:
        with self._transport_lock:
            if self.transport is None:  # built on first use: opening the studio connects to nothing
                from nurture.runtime import Runtime

                self.transport, self.own_transport = Runtime(self.settings).transport, True
            return self.transport

    def render(self, template: str, *, nameless: bool = False) -> tuple[Rendered | None, str | None]:
        """The email for the sample subscriber (``nameless``: one who gave no first name, as many
        do), or the error as ``file:line: message``."""
        recipient = self.renderer.sample_recipient() | ({"first_name": ""} if nameless else {})
        try:
            rendered = self.renderer.render(template, recipient)
        except RenderError as exc:
            return None, where(self.templates_dir, exc.path, *helpful(exc.path, exc.line, exc.message))
        except TemplateFormatError as exc:
            return None, where(self.templates_dir, exc.path, exc.line, exc.message)
        except Exception as exc:  # noqa: BLE001 - e.g. {{ 1 / 0 }}: a message with its line, never a 500
            path, line = template_frame(exc, self.templates_dir) or (self.templates_dir / template, 0)
            return None, where(self.templates_dir, path, line, f"{type(exc).__name__}: {exc}")
        if not nameless:
            self.last_good[template] = rendered
        return rendered, None

    def message(self, entry: Entry, rendered: Rendered, to: str, *, test: bool = False) -> bytes:
        """The message ``rendered`` (this entry for the sample subscriber) as it would be sent to ``to``."""
        s, now = self.settings, self.clock()
        draft = preview_draft(entry.template, to=to, sample=self.renderer.sample_recipient(), origin="studio",
                              label=entry.step.key if entry.step else "email", now=now, from_header=s.mail_from,
                              nonce=secrets.token_hex(4), test=test)
        return compose(draft, renderer=self.renderer, stream=preview_stream(s.mail_from), now=now, rendered=rendered)


def create_studio_app(settings: Settings, *, transport: Transport | None = None, watch: bool = True,
                      clock: Callable[[], datetime] = utcnow) -> FastAPI:
    """The studio's ASGI app. ``transport`` receives test sends (default: settings' Maildir outbox or
    SMTP, built on the first send); ``watch`` runs the file watcher while the app is served."""
    studio = _Studio(settings, transport, clock)
    pages = StudioPages(studio)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        studio.loop, studio.watcher.closed = asyncio.get_running_loop(), False
        stop = asyncio.Event()
        task = asyncio.create_task(studio.watcher.run(stop)) if watch else None
        yield
        stop.set()
        if task is not None:
            try:
                await asyncio.wait_for(task, 6)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                task.cancel()
        if studio.own_transport and studio.transport is not None:
            studio.transport.close()
        studio.impact.close()

    app = FastAPI(title="nurture studio", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio
    app.state.close_streams = studio.close_streams
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(LocalOnly)
    app.include_router(_service_router(studio))
    app.include_router(_email_router(studio, pages))
    app.include_router(_journey_router(studio, pages))
    app.include_router(impact_router(studio.renderer, studio.impact, pages, clock))
    return app


def _service_router(studio: _Studio) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    def healthz():
        return PlainTextResponse("ok")

    @router.get("/favicon.ico")
    def favicon():
        return RedirectResponse("/static/studio-icon.svg", status_code=301)

    @router.get("/events")
    async def events(request: Request):
        return StreamingResponse(event_stream(studio.watcher, request.is_disconnected), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    return router


def _email_router(studio: _Studio, pages: StudioPages) -> APIRouter:
    """The list, one email's page, its previews (HTML, text, MIME source) and the test send."""
    router = APIRouter()

    def missing(template: str) -> PlainTextResponse:
        return PlainTextResponse(f"no email at {template}", status_code=404)

    @router.get("/", response_class=HTMLResponse)
    def overview():
        return pages.page("overview.html", current=None, view="emails", variables=TEMPLATE_CONTEXT, **pages.state())

    @router.get("/email/{template:path}", response_class=HTMLResponse)
    def email(template: str, name: str = ""):
        return pages.email_page(template, nameless=name == "none")

    @router.get("/render/{template:path}")
    def render_html(template: str, last_good: bool = False, name: str = ""):
        if pages.find(template) is None:
            return missing(template)
        rendered, error = studio.render(template, nameless=name == "none")
        if rendered is None and last_good:
            rendered = studio.last_good.get(template)
        if rendered is None:
            html = pages.env.get_template("render_error.html").render(error=error)
            return HTMLResponse(html, status_code=422, headers={"Content-Security-Policy": PREVIEW_CSP})
        return HTMLResponse(_links_open_outside(rendered.html), headers={"Content-Security-Policy": PREVIEW_CSP})

    @router.get("/text/{template:path}")
    def render_text(template: str):
        if pages.find(template) is None:
            return missing(template)
        rendered, error = studio.render(template)
        return PlainTextResponse(rendered.text if rendered else str(error), status_code=200 if rendered else 422)

    @router.get("/raw/{template:path}")
    def render_raw(template: str):
        entry = pages.find(template)
        if entry is None:
            return missing(template)
        rendered, error = studio.render(template)
        if rendered is None:
            return PlainTextResponse(str(error), status_code=422)
        filename = (entry.step.key if entry.step else "email") + ".eml"
        return Response(studio.message(entry, rendered, "test@example.com"), media_type="message/rfc822",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @router.get("/send-test/{template:path}", include_in_schema=False)
    def send_test_get(template: str):
        return RedirectResponse(f"/email/{template}", status_code=303)

    @router.post("/send-test/{template:path}")
    async def send_test(template: str, request: Request):
        form = await request.form()
        raw_to = form.get("to")
        to = raw_to if isinstance(raw_to, str) else ""
        status, notice = await asyncio.to_thread(_send_test, studio, pages, template, to)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"ok": status == 200, "message": notice["text"]}, status_code=status)
        return await asyncio.to_thread(pages.email_page, template, notice=notice, status=status, to=to)

    return router


def _send_test(studio: _Studio, pages: StudioPages, template: str, raw_to: str) -> tuple[int, dict[str, str]]:
    """Send the email at ``template`` to ``raw_to``: the HTTP status and the notice to show."""
    settings = studio.settings

    def fail(status: int, text: str) -> tuple[int, dict[str, str]]:
        return status, {"kind": "error", "text": text}

    entry = pages.find(template)
    if entry is None:
        return fail(404, f"There is no email at {template} any more (renamed or removed?).")
    try:
        to = normalise_email(raw_to)
    except InvalidInput as exc:
        return fail(400, exc.message)
    rendered, error = studio.render(template)
    if rendered is None:
        return fail(422, f"Not sent: this email does not render. Fix {error}")
    try:
        data = studio.message(entry, rendered, to, test=True)
        transport = studio.get_transport()
        reply = transport.send(parseaddr(settings.mail_from)[1], to, data)
    except (Unreachable, NoReply) as exc:
        return fail(502, f"Not sent: the mail server did not take it ({exc}).")
    except Exception as exc:  # noqa: BLE001 - a broken outbox folder, a header problem: say so, no 500
        log.exception("studio test send failed")
        return fail(502, f"Not sent: {type(exc).__name__}: {exc}")
    if not 200 <= reply.code < 300:
        return fail(502, f"Not sent: the mail server refused it ({reply}).")
    if settings.smtp_url:
        where = f"through the mail server {urlsplit(settings.smtp_url).hostname}"
    else:
        where = f"into the local outbox folder {settings.outbox_dir} (no mail server is set up, so nothing left this computer)"
    return 200, {"kind": "ok", "text": f"Test sent to {to} {where}."}


def _journey_router(studio: _Studio, pages: StudioPages) -> APIRouter:
    router = APIRouter()
    settings = studio.settings

    @router.get("/journey", response_class=HTMLResponse)
    def journey(request: Request):
        q = request.query_params
        ctx = pages.state()
        sequences = [g.sequence for g in ctx["groups"] if g.sequence is not None]  # type: ignore[union-attr]
        chosen = q.get("sequence") or settings.sequence
        sequence = next((s for s in sequences if s.name == chosen), sequences[0] if sequences else None)
        zone_name = (q.get("zone") or settings.timezone).strip()
        problems: list[str] = []
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"“{zone_name}” is not a time zone; showing {settings.timezone}.")
            zone_name, zone = settings.timezone, ZoneInfo(settings.timezone)
        now_local = studio.clock().astimezone(zone)
        day = _parse(q.get("date"), date.fromisoformat, now_local.date(), "date", problems)
        at = _parse(q.get("time"), time.fromisoformat, now_local.time().replace(second=0, microsecond=0), "time", problems)
        confirmed_at = datetime.combine(day, at, tzinfo=zone).astimezone(timezone.utc)
        window = Window(*settings.send_window_hours)
        rows = plan_journey(sequence, confirmed_at=confirmed_at, zone=zone, window=window) if sequence else []
        last_day = max((r.day for r in rows), default=0)
        calendar = [(day + timedelta(days=n), [r for r in rows if r.day == n]) for n in range(last_day + 1)]
        zones = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/", "posix/", "right/")))
        return pages.page("journey.html", 400 if problems else 200, current=None, view="journey", rows=rows,
                          sequence=sequence, sequences=sequences, zone=zone_name, zones=zones, common_zones=COMMON_ZONES,
                          day=day, at=at, confirmed_local=confirmed_at.astimezone(zone), calendar=calendar,
                          window=window, interval=settings.send_interval, input_problems=problems, **ctx)

    return router


def _parse(raw: str | None, parse: Callable[[str], object], default, name: str, problems: list[str]):
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        problems.append(f"“{raw}” is not a {name}; showing {default}.")
        return default


def _links_open_outside(html: str) -> str:
    """Clicking a link in a preview opens a new tab instead of navigating the small frame."""
    base = '<base target="_blank">'
    lower = html[:2000].lower()
    at = lower.find("<head")
    if at >= 0:
        end = html.find(">", at) + 1
        return html[:end] + base + html[end:]
    return base + html


def run_studio(settings: Settings, *, host: str = "127.0.0.1", port: int = 8001, sockets=None) -> None:
    """Serve the studio until Ctrl-C. Loopback only: it has no login and can send test emails.
    ``sockets``: already bound to host and port (by the command, which reports a port in use)."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the studio has no login: it listens on 127.0.0.1 only, not {host}")
    app = create_studio_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:  # Ctrl-C: end the open pages' /events streams first
            app.state.close_streams()
            super().handle_exit(sig, frame)

    Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)).run(sockets)
