"""The public web endpoint: signup, double opt-in, email preferences, unsubscribe (RFC 8058),
tracked links, privacy, health; and the /admin dashboard.

This module only wires: it builds what the routers share (a :class:`~nurture.web.site.Site`),
starts and stops the background parts, turns errors into pages or JSON, and includes the
routers, one module per concern (``routes_signup``, ``routes_consent``, ``routes_tracking``,
``routes_health``, ``routes_hooks``, ``admin``). Each handler parses the request, calls one domain function and
answers. The domain modules never see HTTP: the web layer turns InvalidInput into a 4xx, and
decides how each answer looks (a page for a browser form, JSON for an API client).

The event loop never waits on the database or a file: a body is read on the loop (an async
dependency), then the handler, a plain function, runs in the thread pool, so a request waiting
for a lock holds up only itself. Signups skip the thread pool (see ``routes_signup``).

The client's address is the peer's, or what X-Forwarded-For says when the peer is one of
NURTURE_TRUSTED_PROXIES (applied here, not by the server, so the rule is the same under uvicorn
and the test client, for the ledger, the limit and /admin).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from nurture.clock import utcnow
from nurture.feedback.tracking import Landings
from nurture.group_commit import GroupCommit
from nurture.people import subscribers
from nurture.runtime import Runtime
from nurture.sending.ratelimit import WindowLimiter
from nurture.sending.tracked_links import Tracker
from nurture.web.admin import mount_admin
from nurture.web.bodies import BadRequest
from nurture.web.dispatch import Dispatcher, DispatcherProcess
from nurture.web.routes_consent import consent_router
from nurture.web.routes_health import health_router
from nurture.web.routes_hooks import hooks_router
from nurture.web.routes_metrics import metrics_router
from nurture.web.routes_signup import privacy_router, signup_router
from nurture.web.routes_tracking import tracking_router
from nurture.web.site import HERE, Site, page_templates, wants_json


def create_app(runtime: Runtime, *, dispatch: bool = True, dispatch_process: bool = False,
               clock: Callable[[], datetime] = utcnow) -> FastAPI:
    """The ASGI app. ``dispatch`` starts the background thread that sends confirmations at once,
    in a process of its own with ``dispatch_process`` (`nurture serve`: the signups and the
    confirmations then use two cores); ``clock`` is the only place the app reads the time (tests
    pass their own)."""
    settings = runtime.settings
    sender = runtime.sender()
    dispatcher: Dispatcher | DispatcherProcess | None = None
    if dispatch:
        dispatcher = DispatcherProcess(settings) if dispatch_process else Dispatcher(sender, clock)

    def write_signups(session, requests):
        return subscribers.subscribe_many(session, requests, default_timezone=settings.timezone,
                                          confirmations_per_day=settings.confirmations_per_day,
                                          sequence=settings.sequence)

    def signups_committed(outcomes):
        confirmations = sum(outcome.confirmation_queued for outcome in outcomes)
        if dispatcher and confirmations:
            dispatcher.owe(confirmations)  # wakes it, before any of these requests is answered

    signup_writer = GroupCommit(runtime.sessions, write_signups, after_commit=signups_committed,
                                name="nurture-signups")
    signups_per_client = WindowLimiter(*settings.subscribe_limit)
    site = Site(runtime, clock, page_templates(settings), signups_per_client, signup_writer, dispatcher)

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
    _answer_errors(app, site)

    app.include_router(signup_router(site))
    app.include_router(consent_router(site))
    app.include_router(privacy_router(site))
    app.include_router(tracking_router(site, _landings(runtime, sender.tracker, sender.content)))
    app.include_router(health_router())
    app.include_router(metrics_router(runtime, clock=clock))
    app.include_router(hooks_router(site))
    mount_admin(app, runtime, clock=clock)
    return app


def _landings(runtime: Runtime, tracker: Tracker | None, content: Callable) -> Landings:
    """Where clicks land: the links of the message as the sender's ``content`` renders it (before
    tracking); recorded while the sender tracks (``tracker``)."""
    settings = runtime.settings
    return Landings(
        runtime.sessions,
        # A link in mail already sent is still read after click tracking is turned off.
        tracker or Tracker(settings.base_url, runtime.tokens),
        recording=tracker is not None,
        message_html=lambda claim, now: content(claim, now)[0].html,
        own=(settings.consultation_url, settings.website_url),
        default=settings.website_url,
    )


def _answer_errors(app: FastAPI, site: Site) -> None:
    """A page for a browser, JSON for an API client, for every refusal."""

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, exc: BadRequest):
        if wants_json(request):
            body = {"error": exc.message} | ({"field": exc.field} if exc.field else {})
            return JSONResponse(body, status_code=exc.status)
        return site.page("message.html", exc.status, title="Something is not right", message=exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = {404: "There is no page at this address.", 405: "This address does not accept that method."}
        text = message.get(exc.status_code, str(exc.detail))
        if wants_json(request):
            return JSONResponse({"error": text}, status_code=exc.status_code, headers=exc.headers)
        return site.page("message.html", exc.status_code, title="Page not found" if exc.status_code == 404
                         else "Something is not right", message=text)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": "The request is malformed."}, status_code=400)
