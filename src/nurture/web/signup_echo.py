"""The signup this browser just made, carried from POST /subscribe to GET /check-inbox.

The form answers with a redirect (POST/redirect/GET), so reloading the result page never signs up
again. The "Check your inbox" page still shows the address that was typed, so a typo can be seen
and corrected: it travels in a short-lived cookie, signed (it is the person's own input, read back
only by us) and never in the URL, where it would end up in the history, in server logs and in
anything the page links to.

What the page says is worked out from this cookie alone, never from the database: it looks the
same whether the address was new, pending, subscribed or unsubscribed, so nobody can learn who is
on the list from it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from starlette.responses import Response

from nurture.people.subscribers import RESEND_AFTER
from nurture.people.validation import Signup
from nurture.tokens import InvalidToken, Tokens

COOKIE = "nurture_signup"
PURPOSE = "signup-echo"
LIFETIME = timedelta(minutes=30)


@dataclass(frozen=True)
class Echo:
    """What the person typed, when they last asked for a link, and how many links they asked for."""

    email: str
    first_name: str | None
    timezone: str | None
    consent_version: str | None
    asked_at: datetime
    asks: int = 1

    @classmethod
    def of(cls, signup: Signup, now: datetime) -> Echo:
        return cls(signup.email, signup.first_name, signup.timezone, signup.consent_version, now)

    def signup(self) -> Signup:
        return Signup(self.email, self.first_name, self.timezone, self.consent_version, False)

    def next_link_at(self) -> datetime:
        """The earliest a new link can go (the signup rules' pause between two links)."""
        return self.asked_at + RESEND_AFTER

    def asked_again(self, now: datetime) -> Echo:
        return replace(self, asked_at=now, asks=self.asks + 1)

    def local_time(self, instant: datetime, clinic_zone: str) -> str:
        """``instant`` as the person reads a clock: in their browser's zone, else the clinic's."""
        local = instant.astimezone(ZoneInfo(self.timezone or clinic_zone))
        return local.strftime("%I:%M %p").lstrip("0")


def save(response: Response, tokens: Tokens, echo: Echo, *, secure: bool) -> None:
    value = tokens.sign(PURPOSE, [echo.email, echo.first_name, echo.timezone, echo.consent_version,
                                  echo.asked_at.isoformat(), echo.asks])
    response.set_cookie(COOKIE, value, max_age=int(LIFETIME.total_seconds()), path="/", httponly=True,
                        samesite="strict", secure=secure)


def load(cookies: dict[str, str], tokens: Tokens, now: datetime) -> Echo | None:
    """The signup in this browser's cookie, or None when there is none, it was altered, or it is
    older than LIFETIME."""
    value = cookies.get(COOKIE)
    if not value:
        return None
    try:
        email, first_name, zone, version, asked_at, asks = tokens.read(PURPOSE, value)
        echo = Echo(email, first_name, zone, version, datetime.fromisoformat(asked_at), int(asks))
    except (InvalidToken, TypeError, ValueError):
        return None
    return echo if timedelta(0) <= now - echo.asked_at <= LIFETIME else None
