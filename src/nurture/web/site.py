"""What the public pages' routers share: the runtime, the clock, the page templates, the signup
writer and the dispatcher, and the small helpers every handler uses to answer (a page with the
security headers, JSON or HTML, who asked).

Each ``routes_*`` module builds its APIRouter in a function over a Site, its handlers closures
over it: an app's handlers share that app's state (tests build many apps in one process), so a
router function is as long as the routes of its one concern."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from nurture.group_commit import GroupCommit
from nurture.people.consent_ledger import RequestInfo
from nurture.people.subscribers import RESEND_AFTER
from nurture.people.validation import InvalidInput, parse_bool
from nurture.runtime import Runtime
from nurture.sending.ratelimit import WindowLimiter
from nurture.web import signup_echo
from nurture.web.dispatch import Dispatcher, DispatcherProcess

HERE = Path(__file__).parent

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def page_templates(settings) -> Environment:
    """The public pages' templates with the clinic's details. They are part of the package, not
    edited while running: loaded once and never checked on disk again."""
    pages = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                        auto_reload=False)
    pages.globals.update(clinic_name=settings.clinic_name, postal_address=settings.postal_address,
                         clinic_phone=settings.clinic_phone, website_url=settings.website_url,
                         clinic_phone_tel=re.sub(r"[^\d+]", "", settings.clinic_phone),
                         privacy_policy_url=settings.privacy_policy_url,
                         pause_minutes=int(RESEND_AFTER.total_seconds() // 60))
    return pages


@dataclass
class Site:
    """One app's shared parts; ``clock`` is the only place its handlers read the time."""

    runtime: Runtime
    clock: Callable[[], datetime]
    pages: Environment
    # Signups per client address, in this process. Shared across web processes it cost a write
    # transaction per signup beside the group commit's (a third of the signup rate on SQLite):
    # counting inside the group commit's own transaction is the way to share it.
    limiter: WindowLimiter
    signup_writer: GroupCommit
    dispatcher: Dispatcher | DispatcherProcess | None

    @property
    def settings(self):
        return self.runtime.settings

    def page(self, name: str, status: int = 200, **context) -> HTMLResponse:
        return HTMLResponse(self.pages.get_template(name).render(**context), status_code=status,
                            headers=SECURITY_HEADERS)

    def to_check_inbox(self, echo: signup_echo.Echo, query: str = "") -> RedirectResponse:
        """POST/redirect/GET: the result page is a GET, so a reload never signs up again."""
        response = RedirectResponse(f"/check-inbox{query}", status_code=303)
        signup_echo.save(response, self.runtime.tokens, echo, secure=self.settings.base_url.startswith("https:"))
        return response

    def wake(self, *, full: bool = False) -> None:
        """Ask the dispatcher (if any) for a pass now: confirmations, or everything due."""
        if self.dispatcher:
            self.dispatcher.wake(full=full)


def request_info(request: Request, source: str) -> RequestInfo:
    """Who asked, for the consent ledger."""
    return RequestInfo(ip=request.client.host if request.client else None,
                       user_agent=request.headers.get("user-agent"), source=source)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


def wants_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.startswith("application/json") or (
        "application/json" in request.headers.get("accept", "") and "text/html" not in request.headers.get("accept", "")
    )


def form_values(data: dict) -> dict:
    """What the form is shown with again: the text fields as typed, and the consent box as it was."""
    values = {k: v for k, v in data.items() if k in ("email", "first_name") and isinstance(v, str)}
    try:
        values["consent"] = parse_bool(data.get("consent", False), "consent")
    except InvalidInput:
        values["consent"] = False
    return values
