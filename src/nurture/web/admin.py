"""The /admin dashboard: the funnel, consultations booked (and bookings nobody's address matched),
signups per day, recent deliveries, the queue, broadcasts, the latest unverified bounce and
complaint reports, the webhook endpoints and their delivery log, and one subscriber's timeline.
Server-rendered, no JavaScript; the charts are SVG drawn here.

Behind HTTP basic auth (user ``admin``, ``NURTURE_ADMIN_PASSWORD``). Without a password the
dashboard is off and answers 404: it is never open by default. Wrong credentials are throttled
per client address. The page shows personal data, so it is never cached.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from nurture.clock import utcnow
from nurture.content.sequences import Sequence, TemplateFormatError, load_sequences
from nurture.db import transaction
from nurture.feedback import bounces, funnel_figures, reports
from nurture.feedback.timeline import build_timeline
from nurture.message_key import MessageKey
from nurture.people import clinic_actions, goals, webhook_endpoints
from nurture.people.clinic_actions import ACTIONS as _ACTIONS
from nurture.people.consent_ledger import RequestInfo
from nurture.people.validation import InvalidInput, normalise_email
from nurture.runtime import Runtime
from nurture.sending.journey import Planner
from nurture.tokens import InvalidToken
from nurture.web.admin_auth import Failures, basic_credentials
from nurture.web.admin_charts import day, funnel_chart, num, pct, per_day_chart, when

__all__ = ["mount_admin", "admin_router"]

HERE = Path(__file__).parent
USER = "admin"
PERIODS = (7, 30, 90)  # the choices offered beside "all time", in days
DAYS_CHART = 30
LIST_LIMIT = 15
UNVERIFIED_LIMIT = 5  # a few, to show that forgeries arrive and why they were not believed
UNMATCHED_LIMIT = 5  # the latest bookings for addresses nobody subscribed with (a typo, another address)
WEBHOOK_LOG_PER_ENDPOINT = 10
_FAILURES_PER_MINUTE = 10
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: a browser then sends this page's Origin with its own forms' posts
    # (under no-referrer it sends "Origin: null", as a hostile page can), and still nothing to other sites.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="nurture admin", charset="UTF-8"'}


def mount_admin(app: FastAPI, runtime: Runtime, *, clock: Callable[[], datetime] = utcnow) -> None:
    """Serve the dashboard at /admin on ``app`` (static files come from the app's /static)."""
    app.include_router(admin_router(runtime, clock=clock))


def admin_router(runtime: Runtime, *, clock: Callable[[], datetime] = utcnow) -> APIRouter:
    # Long as its two routes and their door are: closures over this app's runtime, pages and throttle.
    settings = runtime.settings
    zone = ZoneInfo(settings.timezone)
    pages = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    pages.filters.update(when=lambda t: when(t, zone), day=day, pct=pct, num=num,
                         reason=lambda text: reports.shown_reason(text, settings.templates_dir))
    pages.globals.update(clinic_name=settings.clinic_name, clinic_zone=settings.timezone)
    failures = Failures(runtime.sessions, _FAILURES_PER_MINUTE, 60.0)  # shared by every web process
    router = APIRouter(include_in_schema=False)

    def page(name: str, status: int = 200, headers: dict | None = None, **context) -> HTMLResponse:
        return HTMLResponse(pages.get_template(name).render(**context), status_code=status,
                            headers=_HEADERS | (headers or {}))

    def refuse(request: Request) -> HTMLResponse | None:
        """The answer when the request may not see the dashboard, or None when it may."""
        password = settings.admin_password.get_secret_value() if settings.admin_password else ""
        if not password:
            return page("admin_off.html", 404)
        given = basic_credentials(request.headers.get("authorization"))
        if given is not None:
            client = request.client.host if request.client else "?"
            # Checked before the password, or guessing would go on at full speed.
            wait = failures.wait(client)
            if wait:
                return page("admin_denied.html", 429, headers={"Retry-After": str(int(wait) + 1)}, throttled=True)
            # Both comparisons always run, so timing says nothing about which part was wrong.
            user_ok = hmac.compare_digest(given[0].encode(), USER.encode())
            password_ok = hmac.compare_digest(given[1].encode(), password.encode())
            if user_ok & password_ok:
                return None
            failures.add(client)
        return page("admin_denied.html", 401, headers=_CHALLENGE, throttled=False)

    @router.post("/admin/action")
    async def action(request: Request):
        """Unsubscribe a person or resend their confirmation: what the clinic does when someone
        phones. Basic auth alone would let another site post here with the browser's stored
        credentials, so the form carries a signed, hour-long token naming the action and the
        address, and a request from another origin is refused."""
        refused = await run_in_threadpool(refuse, request)  # the throttle reads the database
        if refused is not None:
            return refused
        origin = request.headers.get("origin")
        if origin and (origin == "null" or urlsplit(origin).netloc != request.headers.get("host")):
            return page("admin_denied.html", 403, throttled=False, reason="That form came from another site.")
        form = await request.form()
        kind, email, token = (str(form.get(name, "")) for name in ("action", "email", "token"))
        try:
            signed = runtime.tokens.read_timed("admin-action", token, clock(), ACTION_TOKEN_SECONDS)
        except InvalidToken:
            signed = None
        if signed != [kind, email] or kind not in _ACTIONS:
            return page("admin_denied.html", 403, throttled=False,
                        reason="That form is out of date or not from this dashboard. Reload the page and try again.")
        client = request.client.host if request.client else None
        who = RequestInfo(ip=client, user_agent=request.headers.get("user-agent"), source=f"admin:{USER}")
        done = await run_in_threadpool(_act, runtime, kind, email, now=clock(), who=who)
        dispatcher = getattr(request.app.state, "dispatcher", None)
        if done == "resent" and dispatcher is not None:
            dispatcher.wake()  # the confirmation goes now, not at the next scheduled pass
        return RedirectResponse(f"/admin?{urlencode({'email': email, 'done': done})}", status_code=303,
                                headers=_HEADERS)

    @router.get("/admin", response_class=HTMLResponse)
    def dashboard(request: Request):
        refused = refuse(request)
        if refused is not None:
            return refused
        now = clock()
        days, period_note = _period(request.query_params.get("days"))
        since = now - timedelta(days=days) if days else None
        sequence, sequence_note = _sequence(settings.templates_dir, settings.sequence)
        search = _Search(raw=request.query_params.get("email", ""))
        if search.raw.strip():
            try:
                search.email = normalise_email(search.raw)
            except InvalidInput as exc:
                search.error = exc.message
        with runtime.sessions() as session:
            funnel = funnel_figures.funnel(session, since=since, sequence=sequence,
                                    consultation_url=settings.consultation_url,
                                    trackable=funnel_figures.trackable_links(runtime.renderer, (s.template for s in sequence.steps),
                                                                      track_clicks=settings.track_clicks))
            funnel = funnel_figures.with_bookings(session, funnel)
            per_day = reports.signups_per_day(session, days=DAYS_CHART, now=now, zone=settings.timezone)
            deliveries = reports.recent_deliveries(session, LIST_LIMIT)
            waiting = reports.upcoming(session, now=now, limit=LIST_LIMIT)
            queue = reports.queue_counts(session, now=now)
            unverified, unverified_total = bounces.recent_unverified(session, UNVERIFIED_LIMIT)
            webhooks = webhook_endpoints.statuses(session)
            # The latest deliveries of each endpoint, so one that keeps failing never hides the others'.
            webhook_log = sorted((attempt for endpoint in webhooks for attempt in webhook_endpoints.recent_attempts(
                session, endpoint_id=endpoint.id, limit=WEBHOOK_LOG_PER_ENDPOINT)), key=lambda a: a.at, reverse=True)
            unmatched = goals.unmatched(session, limit=UNMATCHED_LIMIT)
            broken = [_Broken(b, fixed=_renders_now(runtime, b.template))
                      for b in reports.broken_templates(session, settings.templates_dir)]
            if search.email:
                try:
                    search.timeline = build_timeline(session, search.email, now=now,
                                                     planner=Planner.from_settings(settings),
                                                     secret=settings.secret, from_header=settings.mail_from)
                except (TemplateFormatError, OSError) as exc:
                    search.error = f"The timeline needs the sequence templates, which cannot be read: {exc}"
                if search.timeline is None and not search.error:
                    search.error = f"No subscriber has the address {search.email}."
                    search.unmatched = goals.unmatched_for(session, search.email)
        if search.timeline is not None:
            search.tokens = {kind: runtime.tokens.sign_timed("admin-action", [kind, search.email], now)
                             for kind in _ACTIONS}
        search.done = _DONE.get(request.query_params.get("done", ""))
        return page(
            "admin.html", funnel=funnel, chart=funnel_chart(funnel), per_day=per_day_chart(per_day),
            deliveries=deliveries, waiting=waiting, queue=queue, search=search, now=now,
            unverified=unverified, unverified_total=unverified_total, claimed=_CLAIMED, unmatched=unmatched,
            booking_keys=_credited_keys(funnel.bookings, sequence),
            days=days, periods=PERIODS, notes=[n for n in (period_note, sequence_note) if n], broken=broken,
            webhooks=webhooks, webhook_log=webhook_log,
        )

    return router


def _credited_keys(bookings: funnel_figures.Bookings, sequence: Sequence) -> list[str]:
    """The emails bookings are credited to: the sequence's in its order, then any other (a
    newsletter issue, a step removed since), each once."""
    steps = [str(MessageKey.sequence_step(sequence.name, step.key)) for step in sequence.steps]
    others = sorted((set(bookings.by_last_email) | set(bookings.by_click)) - set(steps))
    return [key for key in steps + others if bookings.by_last_email.get(key) or bookings.by_click.get(key)]


@dataclass(frozen=True)
class _Broken:
    """A template the sender could not render, and whether it renders now (fixed since)."""

    report: reports.BrokenTemplate
    fixed: bool


def _renders_now(runtime: Runtime, template: str) -> bool:
    """Whether the template renders for a sample person now: once the file is fixed, the banner
    says the held messages go at their next attempt instead of repeating the old error."""
    try:
        runtime.renderer.render(template, runtime.renderer.sample_recipient())
    except Exception:  # noqa: BLE001 - any failure means: still broken
        return False
    return True


@dataclass
class _Search:
    raw: str
    email: str | None = None
    error: str | None = None
    timeline: object = None
    tokens: dict[str, str] = field(default_factory=dict)  # signed form tokens for the actions
    unmatched: list = field(default_factory=list)  # bookings of an address that is nobody's subscription
    done: str | None = None  # what the last action did, said above the timeline


ACTION_TOKEN_SECONDS = 3600
# What the page says after an action (the redirect carries only the key, never free text).
_DONE = {
    "unsubscribed": "Unsubscribed from everything. It is in the consent ledger as done by the admin.",
    "resent": "A new confirmation email is on its way. It is in the consent ledger as asked by the admin.",
    "not-subscribed": "Nothing to do: this person was not subscribed.",
    "not-pending": "Not sent: this person is not waiting to confirm.",
    "capped": "Not sent: this address has had the most confirmation emails allowed today. Try tomorrow.",
    "unknown": "No subscriber has that address any more.",
}


def _act(runtime: Runtime, kind: str, email: str, *, now: datetime, who: RequestInfo) -> str:
    """Do one admin action in one transaction; the key of what to say about it (see _DONE)."""
    with transaction(runtime.sessions) as session:
        return clinic_actions.act(session, kind, email, now=now, who=who,
                                  confirmations_per_day=runtime.settings.confirmations_per_day)


# What an unverified report claimed, in words.
_CLAIMED = {"complaint": "spam complaint", "hard": "hard bounce", "soft": "soft bounce"}


def _period(raw: str | None) -> tuple[int | None, str | None]:
    if raw in (None, "", "all"):
        return None, None
    if raw.isdigit() and int(raw) in PERIODS:
        return int(raw), None
    return None, "That period is not one of the choices; showing all time."


def _sequence(templates_dir: Path, name: str) -> tuple[Sequence, str | None]:
    """The sequence whose steps the funnel lists; an empty one and a note when it cannot be read."""
    try:
        found = load_sequences(templates_dir).get(name)
    except TemplateFormatError as exc:
        return Sequence(name, ()), f"The sequence templates have a mistake, so steps are not shown: {exc}"
    except OSError:
        found = None
    if found is None:
        return Sequence(name, ()), f"No templates for the sequence {name!r} in {templates_dir}."
    return found, None


