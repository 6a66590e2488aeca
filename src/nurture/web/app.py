"""The public web endpoint: signup, double opt-in, email preferences, unsubscribe (RFC 8058), privacy, health.

The domain modules never see HTTP: this module turns InvalidInput into a 4xx, and decides how
each answer looks (a page for a browser form, JSON for an API client).

The event loop never waits on the database or a file: a body is read on the loop (an async
dependency), then the handler, a plain function, runs in the thread pool, so a request waiting
for a lock holds up only itself. Signups, the one endpoint under load, skip the thread pool: the
body is read and checked on the loop (no I/O), then the request waits, without a thread, for the
signup writer (a GroupCommit) to commit its rows together with those of the signups that came
in meanwhile; it answers only once they are committed.

The client's address is the peer's, or what X-Forwarded-For says when the peer is one of
NURTURE_TRUSTED_PROXIES (applied here, not by the server, so the rule is the same under uvicorn
and the test client, for the ledger, the limit and /admin).
"""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from urllib.parse import quote
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from nurture import outbox, subscribers
from nurture.domain_typos import suggest
from nurture.journey import Planner
from nurture.preferences import RESUMES, STOPS, Change, preferences_of, withdrawal_scope
from nurture.db import transaction
from nurture.group_commit import GroupCommit
from nurture.models import OutboxMessage, Subscriber
from nurture.ratelimit import WindowLimiter
from nurture.runtime import Runtime
from nurture.clock import utcnow
from nurture.consent_ledger import CONSENT_VERSION, CONSENT_WORDINGS, RequestInfo
from nurture.new_subscribers import SignupRequest
from nurture.subscribers import ConfirmResult
from nurture.tokens import ExpiredToken, InvalidToken
from nurture.tracking import Tracker, destination, links_in
from nurture.sequences import TemplateFormatError
from nurture.validation import InvalidInput, Signup, parse_bool, parse_signup
from nurture.web.admin import mount_admin
from nurture.web.bodies import BadRequest, read_body
from nurture.web import signup_echo
from nurture.web.dispatch import Dispatcher, DispatcherProcess

log = logging.getLogger(__name__)
HERE = Path(__file__).parent

SIGNUP_BODY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["email", "consent"],
    "properties": {
        "email": {"type": "string", "maxLength": 254, "format": "email"},
        "first_name": {"type": "string", "maxLength": 100},
        "timezone": {"type": "string", "description": "IANA time zone, e.g. Europe/London"},
        "consent": {"type": "boolean"},
        "consent_version": {"type": "string", "maxLength": 32},
    },
}


async def form_json_or_nothing(request: Request) -> tuple[bool, dict]:
    return await read_body(request, allow_empty=True)


def create_app(runtime: Runtime, *, dispatch: bool = True, dispatch_process: bool = False,
               clock: Callable[[], datetime] = utcnow) -> FastAPI:
    """The ASGI app. ``dispatch`` starts the background thread that sends confirmations at once,
    in a process of its own with ``dispatch_process`` (`nurture serve`: the signups and the
    confirmations then use two cores); ``clock`` is the only place the app reads the time (tests
    pass their own)."""
    settings = runtime.settings
    # The pages are part of the package, not edited while running: loaded once (below, for the
    # ones rendered on the event loop) and never checked on disk again.
    pages = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                        auto_reload=False)
    pages.globals.update(clinic_name=settings.clinic_name, postal_address=settings.postal_address,
                         clinic_phone=settings.clinic_phone, website_url=settings.website_url,
                         clinic_phone_tel=re.sub(r"[^\d+]", "", settings.clinic_phone),
                         privacy_policy_url=settings.privacy_policy_url,
                         pause_minutes=int(subscribers.RESEND_AFTER.total_seconds() // 60))
    limit, period = settings.subscribe_limit
    limiter = WindowLimiter(limit, period)
    sender = runtime.sender()
    dispatcher: Dispatcher | DispatcherProcess | None = None
    if dispatch:
        dispatcher = DispatcherProcess(settings) if dispatch_process else Dispatcher(sender, clock)

    def write_signups(session, requests):
        return subscribers.subscribe_many(session, requests, default_timezone=settings.timezone,
                                          confirmations_per_day=settings.confirmations_per_day)

    def signups_committed(outcomes):
        confirmations = sum(outcome.confirmation_queued for outcome in outcomes)
        if dispatcher and confirmations:
            dispatcher.owe(confirmations)  # wakes it, before any of these requests is answered

    signup_writer = GroupCommit(runtime.sessions, write_signups, after_commit=signups_committed,
                                name="nurture-signups")

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        signup_writer.start()
        if dispatcher:
            dispatcher.start()
        # What start-up made (modules, templates, compiled statements, the app: over 100,000
        # objects) lives as long as the app: moved out of the collector's sight, a full
        # collection under load scans only what requests made. Measured under signup load: full
        # collections went from about 100 ms, which stalled every request in flight, to 7-25 ms.
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            signup_writer.stop()
            if dispatcher:
                dispatcher.stop()

    app = FastAPI(title="nurture", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Signup, double opt-in and unsubscribe for the clinic's email series.")
    app.state.runtime = runtime
    app.state.dispatcher = dispatcher
    app.state.signup_writer = signup_writer
    if settings.trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def page(name: str, status: int = 200, **context) -> HTMLResponse:
        return HTMLResponse(pages.get_template(name).render(**context), status_code=status,
                            headers=_SECURITY_HEADERS)

    def request_info(request: Request, source: str) -> RequestInfo:
        return RequestInfo(ip=request.client.host if request.client else None,
                           user_agent=request.headers.get("user-agent"), source=source)

    def signup_page(status: int = 200, error: BadRequest | None = None, values: dict | None = None,
                    suggestion: str | None = None):
        return page("signup.html", status, wording=CONSENT_WORDINGS[CONSENT_VERSION],
                    consent_version=CONSENT_VERSION, error=error, values=values or {}, suggestion=suggestion)

    secure_cookies = settings.base_url.startswith("https:")

    def to_check_inbox(echo: signup_echo.Echo, query: str = "") -> RedirectResponse:
        """POST/redirect/GET: the result page is a GET, so a reload never signs up again."""
        response = RedirectResponse(f"/check-inbox{query}", status_code=303)
        signup_echo.save(response, runtime.tokens, echo, secure=secure_cookies)
        return response

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, exc: BadRequest):
        if _wants_json(request):
            body = {"error": exc.message} | ({"field": exc.field} if exc.field else {})
            return JSONResponse(body, status_code=exc.status)
        return page("message.html", exc.status, title="Something is not right", message=exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = {404: "There is no page at this address.", 405: "This address does not accept that method."}
        text = message.get(exc.status_code, str(exc.detail))
        if _wants_json(request):
            return JSONResponse({"error": text}, status_code=exc.status_code, headers=exc.headers)
        return page("message.html", exc.status_code, title="Page not found" if exc.status_code == 404
                    else "Something is not right", message=text)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": "The request is malformed."}, status_code=400)

    # The signup page is the same for everyone: rendered once, then served straight from the loop,
    # so neither it nor /healthz needs a thread of the pool that slow requests may be holding.
    # So is the answer to a signup (whatever the address's state).
    for name in ("signup.html", "message.html", "check_inbox.html"):
        pages.get_template(name)  # read from disk now, not on the loop later
    blank_signup = signup_page().body
    per_day = settings.confirmations_per_day

    @app.get("/", response_class=HTMLResponse, summary="The signup page")
    async def index(request: Request):
        # "Correct your address" from the result page: the form again, filled in as it was sent.
        echo = signup_echo.load(request.cookies, runtime.tokens, clock()) if "correct" in request.query_params else None
        if echo is None:
            return HTMLResponse(blank_signup, headers=_SECURITY_HEADERS)
        return signup_page(values={"email": echo.email, "first_name": echo.first_name or "", "consent": True,
                                   "correcting": True})

    @app.get("/check-inbox", response_class=HTMLResponse, summary="The answer to a signup from the form")
    async def check_inbox(request: Request, resent: str | None = None, early: str | None = None):
        now = clock()
        echo = signup_echo.load(request.cookies, runtime.tokens, now)
        next_at = echo.next_link_at() if echo else None
        return page("check_inbox.html", echo=echo, resent=resent is not None, early=early is not None and
                    next_at is not None and now < next_at, may_ask_again=echo is not None and echo.asks < per_day,
                    next_link_at=echo.local_time(next_at, settings.timezone) if echo else None, per_day=per_day)

    @app.post("/check-inbox/resend", summary="Send the confirmation link again (within the usual limits)")
    async def resend(request: Request):
        now = clock()
        echo = signup_echo.load(request.cookies, runtime.tokens, now)
        if echo is None:  # too old, or cookies are off: the form is the way
            return RedirectResponse("/", status_code=303)
        if now < echo.next_link_at() or echo.asks >= per_day:
            return RedirectResponse("/check-inbox?early", status_code=303)
        if limiter.hit(request.client.host if request.client else "?"):
            return page("message.html", 429, title="Please wait a moment",
                        message="We received many requests from your network. Please try again in a minute.")
        await signup_writer.submit(SignupRequest(echo.signup(), request_info(request, "resend-button"), now))
        return to_check_inbox(echo.asked_again(now), "?resent")

    @app.post(
        "/subscribe",
        status_code=202,
        summary="Sign up (form or JSON); a confirmation email follows",
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": SIGNUP_BODY_SCHEMA},
            "application/x-www-form-urlencoded": {"schema": SIGNUP_BODY_SCHEMA | {"additionalProperties": True}},
            "multipart/form-data": {"schema": SIGNUP_BODY_SCHEMA | {"additionalProperties": True}},
        }}},
        responses={202: {"description": "Accepted: check your inbox"}, 415: {"description": "Not form or JSON"},
                   413: {"description": "Body over 16 KiB"}, 422: {"description": "Invalid input"},
                   429: {"description": "Too many signups from this address"}},
    )
    async def subscribe(request: Request):
        # On the loop: reading the body, the in-memory limit and the checks of what was typed (no
        # I/O); the database work waits for the signup writer without holding a thread.
        is_json, data = await read_body(request)
        wait = limiter.hit(request.client.host if request.client else "?")
        if wait:
            retry = str(int(wait) + 1)
            if is_json:
                return JSONResponse({"error": "Too many signups from your address; try again shortly."},
                                    status_code=429, headers={"Retry-After": retry})
            return page("message.html", 429, title="Please wait a moment",
                        message="We received many signups from your network. Please try again in a minute.")
        # The form's answers to "did you mean ...?" (its two buttons), not part of the signup.
        use_email = None if is_json else data.pop("use_email", None)
        keep_email = None if is_json else data.pop("keep_email", None)
        try:
            signup = parse_signup(data, lenient_timezone=not is_json)
            suggestion = None if is_json or keep_email == signup.email else suggest(signup.email)
            if suggestion is not None and use_email == suggestion:
                signup, suggestion = parse_signup(data | {"email": suggestion}, lenient_timezone=True), None
        except InvalidInput as exc:
            if is_json:
                return JSONResponse({"error": exc.message, "field": exc.field}, status_code=422)
            return signup_page(422, BadRequest(422, exc.message, exc.field), _form_values(data))
        if suggestion is not None:  # nothing stored yet: the person chooses first
            return signup_page(200, values=_form_values(data) | {"email": signup.email}, suggestion=suggestion)
        if not signup.honeypot_filled:  # the honeypot gets the same answer and stores nothing
            await signup_writer.submit(SignupRequest(
                signup, request_info(request, "json-api" if is_json else "signup-form"), clock()))
        # The same answer whatever the address's state: nobody can learn who is subscribed.
        if is_json:
            return Response(_ACCEPTED, status_code=202, media_type="application/json")
        return to_check_inbox(signup_echo.Echo.of(signup, clock()))

    @app.get("/confirm/{token}", response_class=HTMLResponse, summary="Confirmation page (changes nothing)")
    def confirm_page(token: str):
        # Mail scanners fetch links: a GET only shows the button.
        try:
            runtime.tokens.read_confirm(token, clock())
        except ExpiredToken:
            return page("expired.html", 410, token=token)
        except InvalidToken:
            return page("message.html", 404, title="This link does not work",
                        message="This confirmation link is not valid. Please sign up again from our page.")
        return page("confirm.html", token=token)

    @app.post("/confirm/{token}", summary="Confirm the subscription (idempotent)")
    def confirm(token: str, request: Request):
        now = clock()
        try:
            subscriber_id, round_ = runtime.tokens.read_confirm(token, now)
        except ExpiredToken as exc:
            return _renew(exc.payload[0], request)
        except InvalidToken:
            raise BadRequest(404, "This confirmation link is not valid. Please sign up again.") from None
        with transaction(runtime.sessions) as session:
            result = subscribers.confirm(session, subscriber_id, round_, now=now,
                                         request=request_info(request, "confirm-link"))
        if result is ConfirmResult.confirmed and dispatcher:
            dispatcher.wake(full=True)
        if result is ConfirmResult.not_pending:
            return page("message.html", 200, title="Nothing to confirm",
                        message="This subscription is no longer waiting for confirmation. "
                                "If you would like the emails, please sign up again.")
        if _wants_json(request):
            return JSONResponse({"status": "confirmed"})
        return page("confirmed.html")

    def _renew(subscriber_id: int, request: Request):
        """An expired link: send a fresh one (within the usual limits), then POST/redirect/GET to
        the same "Check your inbox" page as a signup, so a reload never asks again. The address
        it shows is the one the link was sent to, which its holder has already seen."""
        now = clock()
        signup = None
        with transaction(runtime.sessions) as session:
            subscriber = session.get(Subscriber, subscriber_id)
            if subscriber is not None and subscriber.email:
                signup = Signup(subscriber.email, subscriber.first_name, subscriber.timezone, None, False)
                outcome = subscribers.subscribe(
                    session, signup, now=now, request=request_info(request, "renew-link"),
                    default_timezone=settings.timezone, confirmations_per_day=settings.confirmations_per_day)
                if outcome.confirmation_queued and dispatcher:
                    dispatcher.wake()
        if signup is None:  # erased meanwhile: nothing to echo
            return RedirectResponse("/check-inbox", status_code=303)
        return to_check_inbox(signup_echo.Echo.of(signup, now))

    @app.get("/unsubscribe/{token}", response_class=HTMLResponse, summary="Unsubscribe page (changes nothing)")
    def unsubscribe_page(token: str):
        subscriber_id = _unsubscribe_id(token)
        with runtime.sessions() as session:
            subscriber = session.get(Subscriber, subscriber_id)
        done = subscriber is None or subscriber.status.value not in ("pending", "confirmed")
        return page("unsubscribe.html", token=token, done=done)

    @app.post("/unsubscribe/{token}", summary="Unsubscribe; also RFC 8058 one-click (List-Unsubscribe=One-Click)")
    def unsubscribe(token: str, request: Request, body: tuple[bool, dict] = Depends(form_json_or_nothing)):
        subscriber_id = _unsubscribe_id(token)
        _is_json, data = body
        one_click = data.get("List-Unsubscribe") == "One-Click"
        scope = "all" if one_click else str(data.get("scope", "all"))
        if scope not in subscribers.UNSUBSCRIBE_SCOPES:
            raise BadRequest(422, "scope must be all, series or newsletter.", "scope")
        with transaction(runtime.sessions) as session:
            subscribers.unsubscribe(session, subscriber_id, scope=scope, now=clock(),
                                    request=request_info(request, "one-click" if one_click else "unsubscribe-page"))
        if one_click:
            # RFC 8058: a plain 200, no redirect, no cookies.
            return PlainTextResponse("Unsubscribed.", status_code=200)
        if _wants_json(request):
            return JSONResponse({"status": "unsubscribed", "scope": scope})
        if scope != "all":  # what is left, said by the page that reads the state
            return RedirectResponse(f"/preferences/{token}?done=stop-{scope}", status_code=303)
        return page("unsubscribed.html", token=token)

    @app.get("/preferences/{token}", response_class=HTMLResponse, summary="Email preferences (changes nothing)")
    def preferences_page(token: str, done: str | None = None):
        subscriber_id = _unsubscribe_id(token)
        with runtime.sessions() as session:
            subscriber = session.get(Subscriber, subscriber_id)
            state = None if subscriber is None or subscriber.status.value == "erased" else \
                preferences_of(session, subscriber, _sequence())
        change = _change(done)
        # Say a change was made only while the state shows it (a reload later, or an old URL, says nothing).
        saved = change if state is not None and change is not None and state.agrees_with(change) else None
        return page("preferences.html", token=token, state=state, saved=saved, Change=Change)

    @app.post("/preferences/{token}", summary="Stop, or turn back on, the series or the newsletter")
    def change_preferences(token: str, request: Request, body: tuple[bool, dict] = Depends(form_json_or_nothing)):
        subscriber_id = _unsubscribe_id(token)
        _is_json, data = body
        change = _change(data.get("change"))
        if change is None:
            raise BadRequest(422, "change must be one of " + ", ".join(c.value for c in Change) + ".", "change")
        now, who = clock(), request_info(request, "preferences-page")
        sequence = _sequence()  # read from the files before the row is locked, not while
        with transaction(runtime.sessions) as session:
            subscriber = session.get(Subscriber, subscriber_id, with_for_update=True)
            state = preferences_of(session, subscriber, sequence) if subscriber is not None else None
            # Only a change the page could offer now: a stale page or a second click changes nothing.
            allowed = state is not None and change in state.changes
            if allowed and change in STOPS:
                subscribers.unsubscribe(session, subscriber_id, scope=withdrawal_scope(state, change), now=now,
                                        request=who)
            elif allowed:
                subscribers.resume(session, subscriber_id, scope=RESUMES[change], now=now, request=who)
        if allowed and change in RESUMES and dispatcher:
            dispatcher.wake(full=True)  # the next step may be due now
        if _wants_json(request):
            return JSONResponse({"status": "changed" if allowed else "unchanged", "change": change.value})
        return RedirectResponse(f"/preferences/{token}?done={quote(change.value)}", status_code=303)

    def _change(value) -> Change | None:
        return next((c for c in Change if c.value == value), None)

    def _sequence():
        """The sequence as marketing last saved it, or None while a file of it cannot be read
        (the page then does not claim the series is finished)."""
        try:
            return Planner.from_settings(settings).sequence()
        except (TemplateFormatError, OSError):
            return None

    privacy = page("privacy.html").body

    @app.get("/privacy", response_class=HTMLResponse, summary="Privacy notice: what is stored, why, for how long")
    async def privacy_notice():
        return HTMLResponse(privacy, headers=_SECURITY_HEADERS)

    def _unsubscribe_id(token: str) -> int:
        try:
            return runtime.tokens.read_unsubscribe(token)
        except InvalidToken:
            raise BadRequest(404, "This unsubscribe link is not valid. Reply to any of our emails and "
                                  "we will remove you by hand.") from None

    # Links in mail already sent keep working after click tracking is turned off: their tokens are
    # still checked, the clicks are just no longer recorded.
    clicks = sender.tracker or Tracker(settings.base_url, runtime.tokens)
    own_links = (settings.consultation_url, settings.website_url)

    @app.get("/c/{token}", summary="A tracked link: redirects to a link of that email")
    def click(token: str):
        try:
            outbox_id, index, url_hash = clicks.read_click(token)
        except InvalidToken:
            raise BadRequest(404, "This link is not valid.") from None
        now = clock()
        target = settings.website_url
        try:
            with runtime.sessions() as session:
                claim = outbox.claim_of(session, outbox_id)
            # No claim: the person was erased or the message deleted; it cannot be rebuilt.
            links = _links_of(claim, now) if claim is not None else []
            target = destination(links, index, url_hash, own=own_links, default=settings.website_url)
            if claim is not None and sender.tracker is not None:
                with transaction(runtime.sessions) as session:
                    outbox.record_event(session, "clicked", now, subscriber_id=claim.subscriber_id,
                                        outbox_id=claim.id, detail=target)
        except Exception:  # noqa: BLE001 - a reader's click always lands somewhere
            log.exception("click on message %s: recording or resolving failed; sent to %s", outbox_id, target)
        return RedirectResponse(target, status_code=302, headers={"Referrer-Policy": "no-referrer"})

    def _links_of(claim: outbox.Claim, now: datetime) -> list[str]:
        """The message's links, rendered again; none when its template was renamed, removed or
        broken since it was sent (which marketing may do), so the click falls back."""
        try:
            rendered, _recipient = sender.content(claim, now)
        except Exception as exc:  # noqa: BLE001 - whatever the template's trouble, the click lands
            log.warning("click on message %s: cannot render %s again (%s)", claim.id, claim.template, exc)
            return []
        return links_in(rendered.html)

    @app.get("/o/{token}", summary="Open pixel (only in emails that turned it on)")
    def opened(token: str):
        if sender.tracker is None:
            raise BadRequest(404, "Not found.")
        try:
            outbox_id = sender.tracker.read_open(token)
        except InvalidToken:
            raise BadRequest(404, "Not found.") from None
        with transaction(runtime.sessions) as session:
            row = session.get(OutboxMessage, outbox_id)
            if row is not None:
                outbox.record_event(session, "opened", clock(), subscriber_id=row.subscriber_id, outbox_id=row.id)
        return Response(_PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})

    @app.get("/healthz", summary="Liveness")
    async def healthz():
        return {"status": "ok"}  # answered by the event loop itself: it is alive if this is

    mount_admin(app, runtime, clock=clock)
    return app


_ACCEPTED = JSONResponse({"status": "accepted",
                          "message": "Check your inbox for an email to confirm your subscription."}).body

# A transparent 1x1 GIF.
_PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")

_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _wants_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.startswith("application/json") or (
        "application/json" in request.headers.get("accept", "") and "text/html" not in request.headers.get("accept", "")
    )


def _form_values(data: dict) -> dict:
    """What the form is shown with again: the text fields as typed, and the consent box as it was."""
    values = {k: v for k, v in data.items() if k in ("email", "first_name") and isinstance(v, str)}
    try:
        values["consent"] = parse_bool(data.get("consent", False), "consent")
    except InvalidInput:
        values["consent"] = False
    return values
