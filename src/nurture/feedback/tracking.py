"""Click and open tracking, private by default: what a tracked link and the open pixel do when
they land.

The redirect goes only to a URL that is in that message (found again by rendering it) or one of
the clinic's own configured links, so there is no open redirect. Opens use a 1x1 image
``{BASE_URL}/o/{token}``, off unless a sequence or broadcast turns it on (health content: readers
did not sign up to be watched, and Apple Mail prefetches images anyway, which makes open counts
unreliable). No third parties. The tokens themselves are :mod:`nurture.tracked_links`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from nurture.db import transaction
from nurture.models import OutboxMessage
from nurture.sending import outbox
from nurture.sending.outbox import Claim
from nurture.sending.tracked_links import Tracker, destination, links_in, resolve
from nurture.people.webhook_events import emit
from nurture.tokens import InvalidToken

log = logging.getLogger(__name__)


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
                    emit(session, "clicked", now=now, subscriber_id=claim.subscriber_id, email=claim.email,
                         outbox_id=claim.id, message_key=claim.key, url=target)
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
