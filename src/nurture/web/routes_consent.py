"""The links in the emails that change what a person receives: confirm (double opt-in),
unsubscribe (RFC 8058 one-click too) and the preferences page.

Mail scanners fetch links, so a GET only ever shows a page with a button; the POST changes
things. These handlers are plain functions: FastAPI runs them in the thread pool, so the
database work never blocks the event loop.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse

from nurture.content.sequences import Sequence, TemplateFormatError
from nurture.db import transaction
from nurture.people import preferences, subscribers
from nurture.people.preferences import RESUMES, Change
from nurture.people.subscribers import ConfirmResult
from nurture.sending.journey import Planner
from nurture.tokens import ExpiredToken, InvalidToken
from nurture.web import signup_echo
from nurture.web.bodies import BadRequest, read_body
from nurture.web.site import Site, request_info, wants_json


async def form_json_or_nothing(request: Request) -> tuple[bool, dict]:
    return await read_body(request, allow_empty=True)


def consent_router(site: Site) -> APIRouter:
    # Long as its routes are: closures over the site (why: nurture.web.site).
    router = APIRouter()
    runtime, settings = site.runtime, site.settings

    @router.get("/confirm/{token}", response_class=HTMLResponse, summary="Confirmation page (changes nothing)")
    def confirm_page(token: str):
        try:
            runtime.tokens.read_confirm(token, site.clock())
        except ExpiredToken:
            return site.page("expired.html", 410, token=token)
        except InvalidToken:
            return site.page("message.html", 404, title="This link does not work",
                             message="This confirmation link is not valid. Please sign up again from our page.")
        return site.page("confirm.html", token=token)

    @router.post("/confirm/{token}", summary="Confirm the subscription (idempotent)")
    def confirm(token: str, request: Request):
        now = site.clock()
        try:
            subscriber_id, round_ = runtime.tokens.read_confirm(token, now)
        except ExpiredToken as exc:
            return renew(exc.payload[0], request)
        except InvalidToken:
            raise BadRequest(404, "This confirmation link is not valid. Please sign up again.") from None
        with transaction(runtime.sessions) as session:
            result = subscribers.confirm(session, subscriber_id, round_, now=now,
                                         request=request_info(request, "confirm-link"))
        if result is ConfirmResult.confirmed:
            site.wake(full=True)
        if result is ConfirmResult.not_pending:
            return site.page("message.html", 200, title="Nothing to confirm",
                             message="This subscription is no longer waiting for confirmation. "
                                     "If you would like the emails, please sign up again.")
        if wants_json(request):
            return JSONResponse({"status": "confirmed"})
        return site.page("confirmed.html")

    def renew(subscriber_id: int, request: Request):
        """An expired link: send a fresh one (within the usual limits), then POST/redirect/GET to
        the same "Check your inbox" page as a signup, so a reload never asks again. The address
        it shows is the one the link was sent to, which its holder has already seen."""
        now = site.clock()
        with transaction(runtime.sessions) as session:
            signup, queued = subscribers.renew_confirmation(
                session, subscriber_id, now=now, request=request_info(request, "renew-link"),
                default_timezone=settings.timezone, confirmations_per_day=settings.confirmations_per_day)
        if queued:
            site.wake()
        if signup is None:  # erased meanwhile: nothing to echo
            return RedirectResponse("/check-inbox", status_code=303)
        return site.to_check_inbox(signup_echo.Echo.of(signup, now))

    @router.get("/unsubscribe/{token}", response_class=HTMLResponse, summary="Unsubscribe page (changes nothing)")
    def unsubscribe_page(token: str):
        subscriber_id = unsubscribe_id(token)
        with runtime.sessions() as session:
            done = not preferences.may_unsubscribe(session, subscriber_id)
        return site.page("unsubscribe.html", token=token, done=done)

    @router.post("/unsubscribe/{token}", summary="Unsubscribe; also RFC 8058 one-click (List-Unsubscribe=One-Click)")
    def unsubscribe(token: str, request: Request, body: tuple[bool, dict] = Depends(form_json_or_nothing)):
        subscriber_id = unsubscribe_id(token)
        _is_json, data = body
        one_click = data.get("List-Unsubscribe") == "One-Click"
        scope = "all" if one_click else str(data.get("scope", "all"))
        if scope not in subscribers.UNSUBSCRIBE_SCOPES:
            raise BadRequest(422, "scope must be all, series or newsletter.", "scope")
        with transaction(runtime.sessions) as session:
            subscribers.unsubscribe(session, subscriber_id, scope=scope, now=site.clock(),
                                    request=request_info(request, "one-click" if one_click else "unsubscribe-page"))
        if one_click:
            # RFC 8058: a plain 200, no redirect, no cookies.
            return PlainTextResponse("Unsubscribed.", status_code=200)
        if wants_json(request):
            return JSONResponse({"status": "unsubscribed", "scope": scope})
        if scope != "all":  # what is left, said by the page that reads the state
            return RedirectResponse(f"/preferences/{token}?done=stop-{scope}", status_code=303)
        return site.page("unsubscribed.html", token=token)

    @router.get("/preferences/{token}", response_class=HTMLResponse, summary="Email preferences (changes nothing)")
    def preferences_page(token: str, done: str | None = None):
        subscriber_id = unsubscribe_id(token)
        with runtime.sessions() as session:
            state = preferences.preferences_of_id(session, subscriber_id, sequence())
        change = _change(done)
        # Say a change was made only while the state shows it (a reload later, or an old URL, says nothing).
        saved = change if state is not None and change is not None and state.agrees_with(change) else None
        return site.page("preferences.html", token=token, state=state, saved=saved, Change=Change)

    @router.post("/preferences/{token}", summary="Stop, or turn back on, the series or the newsletter")
    def change_preferences(token: str, request: Request, body: tuple[bool, dict] = Depends(form_json_or_nothing)):
        subscriber_id = unsubscribe_id(token)
        _is_json, data = body
        change = _change(data.get("change"))
        if change is None:
            raise BadRequest(422, "change must be one of " + ", ".join(c.value for c in Change) + ".", "change")
        now, who = site.clock(), request_info(request, "preferences-page")
        read = sequence()  # read from the files before the row is locked, not while
        with transaction(runtime.sessions) as session:
            changed = preferences.change_preferences(session, subscriber_id, change, read, now=now, request=who)
        if changed and change in RESUMES:
            site.wake(full=True)  # the next step may be due now
        if wants_json(request):
            return JSONResponse({"status": "changed" if changed else "unchanged", "change": change.value})
        return RedirectResponse(f"/preferences/{token}?done={quote(change.value)}", status_code=303)

    def sequence() -> Sequence | None:
        """The sequence as marketing last saved it, or None while a file of it cannot be read
        (the page then does not claim the series is finished)."""
        try:
            return Planner.from_settings(settings).sequence()
        except (TemplateFormatError, OSError):
            return None

    def unsubscribe_id(token: str) -> int:
        try:
            return runtime.tokens.read_unsubscribe(token)
        except InvalidToken:
            raise BadRequest(404, "This unsubscribe link is not valid. Reply to any of our emails and "
                                  "we will remove you by hand.") from None

    return router


def _change(value) -> Change | None:
    return next((c for c in Change if c.value == value), None)
