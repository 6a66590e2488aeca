"""Click and open tracking, private by default.

A tracked link is ``{BASE_URL}/c/{token}``: the token is signed and names the outbox row, the
link's position in that message and a short hash of its URL. The redirect goes only to a URL
that is in that message (found again by rendering it) or one of the clinic's own configured
links, so there is no open redirect, and a forged or altered token is refused. Opens use a 1x1 image ``{BASE_URL}/o/{token}``, off unless a
sequence or broadcast turns it on (health content: readers did not sign up to be watched, and
Apple Mail prefetches images anyway, which makes open counts unreliable). No third parties.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from nurture import outbox
from nurture.db import transaction
from nurture.models import OutboxMessage
from nurture.outbox import Claim
from nurture.tokens import InvalidToken, Tokens

log = logging.getLogger(__name__)

_HREF = re.compile(r'(<a\b[^>]*?\bhref=")(https?://[^"]*)(")', re.IGNORECASE)
_BODY_END = re.compile(r"</body>", re.IGNORECASE)


# Links that go straight to their site, never through /c/: someone in crisis must reach the
# Lifeline even when we are down, and we have no business knowing who clicked it.
NEVER_TRACKED = frozenset({"https://988lifeline.org/chat/"})


def untracked_links(recipient: dict[str, str]) -> frozenset[str]:
    """The links of a marketing email that are never rewritten: the person's unsubscribe and
    preferences links (they must work without us counting them) and NEVER_TRACKED."""
    return frozenset((recipient["unsubscribe_url"], recipient["preferences_url"])) | NEVER_TRACKED


def links_in(message_html: str) -> list[str]:
    """The http(s) link targets of a message, in document order, as a browser would follow them."""
    return [html.unescape(match.group(2)) for match in _HREF.finditer(message_html)]


def _url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Tracker:
    base_url: str
    tokens: Tokens

    def rewrite(self, message_html: str, outbox_id: int, *, untracked: frozenset[str], track_opens: bool) -> str:
        """Route every http(s) link through /c/ (except ``untracked`` ones such as the unsubscribe
        link, which must work without us), and add the open pixel when asked."""
        index = -1

        def tracked(match: re.Match[str]) -> str:
            nonlocal index
            index += 1
            url = html.unescape(match.group(2))
            if url in untracked:
                return match.group(0)
            token = self.tokens.sign("click", [outbox_id, index, _url_hash(url)])
            return f"{match.group(1)}{self.base_url}/c/{token}{match.group(3)}"

        rewritten = _HREF.sub(tracked, message_html)
        if track_opens:
            pixel = (f'<img src="{self.base_url}/o/{self.tokens.sign("open", outbox_id)}" width="1" height="1" '
                     'alt="" style="display:block;border:0;width:1px;height:1px">')
            rewritten, found = _BODY_END.subn(pixel + "</body>", rewritten, count=1)
            if not found:
                rewritten += pixel
        return rewritten

    def read_click(self, token: str) -> tuple[int, int, str]:
        """(outbox id, link index, URL hash); raises InvalidToken."""
        value = self.tokens.read("click", token)
        if (isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) for v in value[:2])
                and isinstance(value[2], str)):
            return value[0], value[1], value[2]
        raise InvalidToken("not a valid link")

    def read_open(self, token: str) -> int:
        value = self.tokens.read("open", token)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise InvalidToken("not a valid pixel")


def resolve(links: Sequence[str], index: int, url_hash: str) -> str | None:
    """The link a click token points at, if it is still in the message: by position when the
    URL there is the one signed, else anywhere in the message (the email was edited since)."""
    if 0 <= index < len(links) and _url_hash(links[index]) == url_hash:
        return links[index]
    return next((url for url in links if _url_hash(url) == url_hash), None)


def destination(links: Sequence[str], index: int, url_hash: str, *, own: Sequence[str], default: str) -> str:
    """Where a click goes: the signed link of the message (``links``, rendered again); failing
    that, one of the clinic's own configured links (``own``) if it is the one signed, which
    still finds the consultation link when the message cannot be rendered any more (its
    template renamed or removed since); else ``default``. Never a URL that was not signed."""
    return resolve(links, index, url_hash) or resolve(own, -1, url_hash) or default


@dataclass(frozen=True)
class Landings:
    """What a tracked link (/c/) and the open pixel (/o/) do: where a click goes, and what is
    recorded. The web handlers only parse the token out of the URL and answer.

    Links in mail already sent keep working after tracking is turned off (``recording`` False):
    their tokens are still checked, the clicks are just no longer recorded, and the pixel is gone.
    """

    sessions: sessionmaker[Session]
    tracker: Tracker  # reads the tokens, whether or not tracking is on now
    recording: bool
    message_html: Callable[[Claim, datetime], str]  # the message rendered again, before tracking
    own: tuple[str, ...]  # the clinic's own links, recognised by hash when the message is gone
    default: str  # where a click goes when nothing signed can be found

    def click(self, token: str, now: datetime) -> str:
        """The URL to redirect to for this click token, after recording the click (when
        recording). Raises InvalidToken for a forged or altered token; anything else that goes
        wrong is logged and the click still lands (on ``default`` at worst)."""
        outbox_id, index, url_hash = self.tracker.read_click(token)
        target = self.default
        try:
            with self.sessions() as session:
                claim = outbox.claim_of(session, outbox_id)
            # The clinic's own links (the consultation, the website: most clicks) need no render:
            # a link of the message with that hash is that same URL. Any other is looked for in
            # the message, rendered again; with no claim (the person erased, the message deleted)
            # it cannot be rebuilt.
            own = resolve(self.own, -1, url_hash)
            links = self._links_of(claim, now) if claim is not None and own is None else []
            target = own or destination(links, index, url_hash, own=self.own, default=self.default)
            if claim is not None and self.recording:
                with transaction(self.sessions) as session:
                    outbox.record_event(session, "clicked", now, subscriber_id=claim.subscriber_id,
                                        outbox_id=claim.id, detail=target)
        except Exception:  # noqa: BLE001 - a reader's click always lands somewhere
            log.exception("click on message %s: recording or resolving failed; sent to %s", outbox_id, target)
        return target

    def _links_of(self, claim: Claim, now: datetime) -> list[str]:
        """The message's links, rendered again (the token signs a link's place and hash, not the
        URL itself, so the message is the only list of where its clicks may go); none when its
        template was renamed, removed or broken since it was sent (which marketing may do), so
        the click falls back."""
        try:
            message_html = self.message_html(claim, now)
        except Exception as exc:  # noqa: BLE001 - whatever the template's trouble, the click lands
            log.warning("click on message %s: cannot render %s again (%s)", claim.id, claim.template, exc)
            return []
        return links_in(message_html)

    def open(self, token: str, now: datetime) -> None:
        """Record that the open pixel of this token's message loaded. Raises InvalidToken for a
        bad token, and while opens are not recorded (the pixel then does not exist)."""
        if not self.recording:
            raise InvalidToken("opens are not tracked")
        outbox_id = self.tracker.read_open(token)
        with transaction(self.sessions) as session:
            row = session.get(OutboxMessage, outbox_id)
            if row is not None:
                outbox.record_event(session, "opened", now, subscriber_id=row.subscriber_id, outbox_id=row.id)
