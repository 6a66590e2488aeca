"""The one way a message is built: render, track (marketing only), dress in headers, sign.

The sender composes each outbox row with :func:`outbox_draft`; the studio and ``nurture templates
preview`` compose a sample with :func:`preview_draft`. Both go through :func:`compose`, so what
marketing previews is what subscribers get, and only what a preview cannot have differs, said in
its arguments: a sample recipient instead of a subscriber's links, a one-off Message-ID instead of
the row's, the plain From (no List-Id, Feedback-ID or DKIM: :func:`preview_stream`), no tracking,
and the ``[TEST]`` subject marker on a test copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import parseaddr
from typing import Protocol

from nurture.content.rendering import Rendered, Renderer
from nurture.links import Links
from nurture.message_key import Kind, MessageKey
from nurture.sending.messages import Dkim, Stream, build_message, message_id, sender_domain
from nurture.sending.tracked_links import Tracker, untracked_links

TEST_SUBJECT_MARKER = "[TEST] "  # a test copy from the studio or the CLI, so nobody takes it for the real one


@dataclass(frozen=True)
class Draft:
    """One message before it is built: what it is, for whom, and under which Message-ID."""

    kind: Kind
    template: str
    to: str  # the To address, as stored
    values: Mapping[str, str]  # the recipient's template values (first_name, unsubscribe_url, ... or confirm_url)
    message_id: str
    key: MessageKey | None = None  # the outbox row's key; None: a preview
    outbox_id: int | None = None  # the outbox row; None: a preview, never tracked
    track_opens: bool = False
    subject_prefix: str = ""  # TEST_SUBJECT_MARKER on a test copy


class OutboxRow(Protocol):
    """What :func:`outbox_draft` reads of a claimed row (``outbox.Claim`` has it)."""

    id: int
    key: str
    template: str
    email: str
    first_name: str | None
    subscriber_id: int
    track_opens: bool


def recipient_values(key: MessageKey, *, subscriber_id: int, first_name: str | None, links: Links,
                     now: datetime) -> dict[str, str]:
    """A subscriber's own template values for a message: the confirmation link of its round, or,
    on marketing mail, the first name and the unsubscribe and preferences links."""
    if not key.is_marketing:
        return {"confirm_url": links.confirm(subscriber_id, key.round, now)}  # type: ignore[arg-type]
    unsubscribe_url = links.unsubscribe(subscriber_id)
    return {
        "first_name": first_name or "",
        "unsubscribe_url": unsubscribe_url,
        "preferences_url": links.preferences(unsubscribe_url),
    }


def outbox_draft(row: OutboxRow, *, links: Links, secret: str, domain: str, now: datetime) -> Draft:
    """The draft of an outbox row; its Message-ID is a function of the row, the same on every attempt.
    Raises ValueError for a key that is not one of ours."""
    key = MessageKey.parse(row.key)
    values = recipient_values(key, subscriber_id=row.subscriber_id, first_name=row.first_name, links=links, now=now)
    return Draft(kind=key.kind, template=row.template, to=row.email, values=values,
                 message_id=message_id(row.id, row.key, secret=secret, domain=domain), key=key,
                 outbox_id=row.id, track_opens=row.track_opens)


def preview_draft(template: str, *, to: str, sample: Mapping[str, str], origin: str, label: str, now: datetime,
                  from_header: str, nonce: str = "", test: bool = False) -> Draft:
    """The draft of a preview of ``template`` for a sample recipient (``Renderer.sample_recipient``).
    Its Message-ID ``<origin.label.seconds[.nonce]@domain>`` names where it was made and is never a
    row's; ``test`` marks the subject of a copy sent to a real mailbox."""
    nonce_part = f".{nonce}" if nonce else ""
    return Draft(kind=Kind.of_template(template), template=template, to=to, values=sample,
                 message_id=f"<{origin}.{label}.{int(now.timestamp())}{nonce_part}@{sender_domain(from_header)}>",
                 subject_prefix=TEST_SUBJECT_MARKER if test else "")


def preview_stream(from_header: str) -> Stream:
    """What a preview is sent as: the plain From, none of a stream's list headers."""
    return Stream("preview", from_header=from_header, return_path=parseaddr(from_header)[1])


def render(draft: Draft, renderer: Renderer) -> Rendered:
    """The draft's email for its recipient, before tracking (raises RenderError)."""
    return renderer.render(draft.template, dict(draft.values))


def compose(draft: Draft, *, renderer: Renderer, stream: Stream, now: datetime, tracker: Tracker | None = None,
            dkim: Dkim | None = None, rendered: Rendered | None = None) -> bytes:
    """The exact bytes of the message: rendered (unless ``rendered`` already is, as the studio does
    to show a template's error on its page), links tracked on marketing mail of an outbox row, then
    the headers of its ``stream`` (List-Unsubscribe on marketing mail) and the DKIM signature."""
    if rendered is None:
        rendered = render(draft, renderer)
    marketing = draft.kind.is_marketing
    if marketing and tracker is not None and draft.outbox_id is not None:
        # Never tracked: the confirmation (no consent yet), and untracked_links.
        html = tracker.rewrite(rendered.html, draft.outbox_id, untracked=untracked_links(dict(draft.values)),
                               track_opens=draft.track_opens)
        rendered = replace(rendered, html=html)
    if draft.subject_prefix:
        rendered = replace(rendered, subject=draft.subject_prefix + rendered.subject)
    return build_message(
        rendered,
        from_header=stream.from_header,
        to=draft.to,
        message_id=draft.message_id,
        date=now,
        unsubscribe_url=draft.values["unsubscribe_url"] if marketing else None,
        unsubscribe_mailbox=stream.unsubscribe_mailbox,
        list_id=stream.list_id,
        extra_headers=stream.message_headers(draft.key),
        dkim=dkim,
    )
