"""Tracked links in outgoing mail: the rewrite of a message's links into signed ``/c/`` tokens
and the open pixel, and reading those tokens back.

A tracked link is ``{BASE_URL}/c/{token}``: the token is signed and names the outbox row, the
link's position in that message and a short hash of its URL, so a click can only ever go to a
link of that message (:func:`resolve`, :func:`destination`), and a forged or altered token is
refused. What a click or an open does when it lands is :mod:`nurture.tracking`.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from nurture.tokens import InvalidToken, Tokens

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
