"""The signup pages: the form, ``POST /subscribe`` (form or JSON), the "check your inbox" answer
with its resend button, and the privacy notice.

Signups, the one endpoint under load, skip the thread pool: the body is read and checked on the
loop (no I/O), then the request waits, without a thread, for the signup writer (a GroupCommit) to
commit its rows together with those of the signups that came in meanwhile; it answers only once
they are committed. The form, the privacy notice and the answer to a JSON signup are the same
for everyone: rendered once, then served straight from the loop.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from nurture.people.consent_ledger import CONSENT_VERSION, CONSENT_WORDINGS
from nurture.people.domain_typos import suggest
from nurture.people.new_subscribers import SignupRequest
from nurture.people.validation import InvalidInput, parse_signup
from nurture.web import signup_echo
from nurture.web.bodies import BadRequest, read_body
from nurture.web.site import SECURITY_HEADERS, Site, client_address, form_values, request_info

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

_ACCEPTED = JSONResponse({"status": "accepted",
                          "message": "Check your inbox for an email to confirm your subscription."}).body


def signup_router(site: Site) -> APIRouter:
    # Long as its routes are: closures over the site (why: nurture.web.site).
    router = APIRouter()
    per_day = site.settings.confirmations_per_day

    def signup_page(status: int = 200, error: BadRequest | None = None, values: dict | None = None,
                    suggestion: str | None = None):
        return site.page("signup.html", status, wording=CONSENT_WORDINGS[CONSENT_VERSION],
                         consent_version=CONSENT_VERSION, error=error, values=values or {}, suggestion=suggestion)

    for name in ("signup.html", "message.html", "check_inbox.html"):
        site.pages.get_template(name)  # read from disk now, not on the loop later
    blank_signup = signup_page().body

    def too_many() -> HTMLResponse:
        return site.page("message.html", 429, title="Please wait a moment",
                         message="We received many signups from your network. Please try again in a minute.")

    @router.get("/", response_class=HTMLResponse, summary="The signup page")
    async def index(request: Request):
        # "Correct your address" from the result page: the form again, filled in as it was sent.
        echo = signup_echo.load(request.cookies, site.runtime.tokens, site.clock()) \
            if "correct" in request.query_params else None
        if echo is None:
            return HTMLResponse(blank_signup, headers=SECURITY_HEADERS)
        return signup_page(values={"email": echo.email, "first_name": echo.first_name or "", "consent": True,
                                   "correcting": True})

    @router.get("/check-inbox", response_class=HTMLResponse, summary="The answer to a signup from the form")
    async def check_inbox(request: Request, resent: str | None = None, early: str | None = None):
        now = site.clock()
        echo = signup_echo.load(request.cookies, site.runtime.tokens, now)
        next_at = echo.next_link_at() if echo else None
        return site.page("check_inbox.html", echo=echo, resent=resent is not None, early=early is not None and
                         next_at is not None and now < next_at, may_ask_again=echo is not None and echo.asks < per_day,
                         next_link_at=echo.local_time(next_at, site.settings.timezone) if echo else None,
                         per_day=per_day)

    @router.post("/check-inbox/resend", summary="Send the confirmation link again (within the usual limits)")
    async def resend(request: Request):
        now = site.clock()
        echo = signup_echo.load(request.cookies, site.runtime.tokens, now)
        if echo is None:  # too old, or cookies are off: the form is the way
            return RedirectResponse("/", status_code=303)
        if now < echo.next_link_at() or echo.asks >= per_day:
            return RedirectResponse("/check-inbox?early", status_code=303)
        if await run_in_threadpool(site.limiter.hit, client_address(request)):
            return site.page("message.html", 429, title="Please wait a moment",
                             message="We received many requests from your network. Please try again in a minute.")
        await site.signup_writer.submit(SignupRequest(echo.signup(), request_info(request, "resend-button"), now))
        return site.to_check_inbox(echo.asked_again(now), "?resent")

    @router.post(
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
        # On the loop: reading the body and the checks of what was typed (no I/O). The limit, shared
        # with the other web processes, is one statement in a thread; the signup itself waits for
        # the signup writer without holding a thread.
        is_json, data = await read_body(request)
        wait = await run_in_threadpool(site.limiter.hit, client_address(request))
        if wait:
            if is_json:
                return JSONResponse({"error": "Too many signups from your address; try again shortly."},
                                    status_code=429, headers={"Retry-After": str(int(wait) + 1)})
            return too_many()
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
            return signup_page(422, BadRequest(422, exc.message, exc.field), form_values(data))
        if suggestion is not None:  # nothing stored yet: the person chooses first
            return signup_page(200, values=form_values(data) | {"email": signup.email}, suggestion=suggestion)
        if not signup.honeypot_filled:  # the honeypot gets the same answer and stores nothing
            await site.signup_writer.submit(SignupRequest(
                signup, request_info(request, "json-api" if is_json else "signup-form"), site.clock()))
        # The same answer whatever the address's state: nobody can learn who is subscribed.
        if is_json:
            return Response(_ACCEPTED, status_code=202, media_type="application/json")
        return site.to_check_inbox(signup_echo.Echo.of(signup, site.clock()))

    return router


def privacy_router(site: Site) -> APIRouter:
    router = APIRouter()
    privacy = site.page("privacy.html").body

    @router.get("/privacy", response_class=HTMLResponse, summary="Privacy notice: what is stored, why, for how long")
    async def privacy_notice():
        return HTMLResponse(privacy, headers=SECURITY_HEADERS)

    return router
