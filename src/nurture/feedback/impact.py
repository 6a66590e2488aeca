"""What publishing the templates on disk will do to the people already in the sequence.

`nurture templates impact` and the studio's impact panel: each step of the sequence on disk is
compared with the version of it last sent (kept by :mod:`nurture.sending.sent_versions`), and each
is said with numbers from the database: who will receive the version on disk and when, who will
no longer get a removed step. It only reads.

Who gets a step, and when, is the planner's own answer (:func:`nurture.sending.journey.upcoming_sends`,
in each person's time zone, in the send window, one marketing email a day), asked for everyone
still in the series, a page at a time; people with the step already queued or being retried get
it when their row is due. A removed step is asked of the sequence as it was when that step was
last sent (its sibling steps are kept with it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from nurture.content.rendering import RenderError, Renderer
from nurture.content.sequences import Sequence
from nurture.feedback.version_compare import kept_sequence, visible_changes
from nurture.message_key import SEQUENCE_PREFIX
from nurture.models import OutboxMessage, OutboxState, Status, Subscriber
from nurture.sending.journey import Planner, key_of, marketing_history, upcoming_sends
from nurture.sending.sent_versions import load_version, version_of_files

__all__ = ["Impact", "StepImpact", "preview_impact"]

PAGE = 2000
_OPEN = (OutboxState.queued, OutboxState.sending, OutboxState.retry, OutboxState.unknown)

# What happened to a step, from marketing's side.
CHANGED, INVISIBLE, UNCHANGED, NEW, REMOVED, UNKEPT, BROKEN = (
    "changed", "no visible change", "unchanged", "new", "removed", "not kept", "broken")


@dataclass
class StepImpact:
    """One step: what happened to it, and whom it reaches."""

    key: str
    kind: str
    parts: tuple[str, ...] = ()  # for CHANGED: what a reader sees differ (subject, preheader, body, look)
    people: int = 0  # will receive the version on disk; for REMOVED, will no longer get the step
    first: datetime | None = None  # the first and last of those sends (UTC)
    last: datetime | None = None
    sent_to: int = 0  # people who received it already (any version)
    last_version: str | None = None  # short hashes
    disk_version: str | None = None
    problem: str | None = None  # for BROKEN: file:line: message
    stuck: int = 0  # for REMOVED: rows still queued for it, which cannot be built any more
    # The step's conditions as its front matter says them ("only_if: not_clicked:…"): decided only
    # when the step falls due, from clicks not made yet, so ``people`` is then an upper bound.
    condition: str = ""

    def reach(self, instant: datetime) -> None:
        self.people += 1
        self.first = instant if self.first is None else min(self.first, instant)
        self.last = instant if self.last is None else max(self.last, instant)


@dataclass
class Impact:
    """The steps on disk in their order, then the removed ones."""

    sequence: str
    now: datetime
    steps: list[StepImpact] = field(default_factory=list)

    @property
    def changes(self) -> list[StepImpact]:
        return [s for s in self.steps if s.kind in (CHANGED, NEW, REMOVED, BROKEN)]


@dataclass
class _Sent:
    """What the outbox says about one step key of the sequence."""

    sent_to: int = 0
    last: tuple[str, str] | None = None  # (template, digest) of the latest sent row with a kept version
    waiting: list[datetime] = field(default_factory=list)  # due instants of rows queued or retrying


def preview_impact(session: Session, *, renderer: Renderer, planner: Planner, now: datetime) -> Impact:
    """Compare the sequence on disk with what was last sent. Raises TemplateFormatError when the
    sequence cannot be read; an email that cannot be rendered is reported as BROKEN."""
    name = planner.sequence_name
    sequence = planner.sequence() or Sequence(name, ())
    sent = _outbox_by_key(session, name, now)
    impact = Impact(name, now)
    on_disk: dict[str, StepImpact] = {}
    for step in sequence.steps:
        found = sent.pop(key_of(step), _Sent())
        on_disk[key_of(step)] = step_impact = _compare(session, renderer, step.key, step.template, found, now)
        step_impact.condition = ", ".join(str(condition) for condition in step.conditions)
        impact.steps.append(step_impact)
        for at in found.waiting:  # queued or retrying: built from the files on disk when it goes
            step_impact.reach(at)
    # A removed step is asked of the sequence it was last sent in; without a kept version, of none.
    gone: list[tuple[str, StepImpact, Sequence | None]] = []
    for key, found in sorted(sent.items()):
        version = load_version(session, *found.last) if found.last else None
        step_impact = StepImpact(key.split(":", 2)[-1], REMOVED, sent_to=found.sent_to,
                                 last_version=version.short if version else None, stuck=len(found.waiting))
        impact.steps.append(step_impact)
        gone.append((key, step_impact, kept_sequence(version, name) if version else None))
    olds = [(key, step_impact, old) for key, step_impact, old in gone if old is not None]
    for sends in _projections(session, [sequence, *(old for _, _, old in olds)], planner, now):
        for key, at in sends[0]:
            on_disk[key].reach(at)
        for (key, step_impact, _), old_sends in zip(olds, sends[1:]):
            for old_key, at in old_sends:
                if old_key == key:
                    step_impact.reach(at)
    return impact


def _projections(session: Session, sequences: list[Sequence], planner: Planner,
                 now: datetime) -> Iterator[list[list[tuple[str, datetime]]]]:
    """For each person still in the series, a page at a time: the planner's answer, for each of
    ``sequences``, to "which steps will they still get, and when"."""
    after = 0
    while True:
        people = session.execute(
            select(Subscriber.id, Subscriber.confirmed_at, Subscriber.timezone)
            .where(Subscriber.status == Status.confirmed, Subscriber.wants_series.is_(True),
                   Subscriber.confirmed_at.is_not(None), Subscriber.id > after)
            .order_by(Subscriber.id).limit(PAGE)).all()
        if not people:
            return
        history = marketing_history(session, now, ids=[sid for sid, _, _ in people])
        for sid, confirmed_at, zone_name in people:
            zone = ZoneInfo(zone_name)
            yield [[(key_of(step), at) for step, at in upcoming_sends(
                        sequence, confirmed_at=confirmed_at, zone=zone, done_keys=history.done.get(sid, set()),
                        last_marketing_at=history.last.get(sid), now=now, window=planner.window)]
                   for sequence in sequences]
        after = people[-1][0]


def _compare(session: Session, renderer: Renderer, key: str, template: str, sent: _Sent, now: datetime) -> StepImpact:
    """One step on disk against the version of it last sent."""
    impact = StepImpact(key, NEW, sent_to=sent.sent_to)
    try:
        disk = version_of_files(template, renderer.templates_dir, renderer.dependencies(template))
    except (RenderError, OSError) as exc:
        impact.kind, impact.problem = BROKEN, str(exc)
        return impact
    impact.disk_version = disk.short
    if sent.last is None:
        impact.kind = UNKEPT if sent.sent_to else NEW
        return impact
    old = load_version(session, *sent.last)
    if old is None:
        impact.kind = UNKEPT
        return impact
    impact.last_version = old.short
    if old.digest == disk.digest and old.template == template:
        impact.kind = UNCHANGED
        return impact
    try:
        impact.parts = visible_changes(renderer, old, template, year=now.year)
    except RenderError as exc:
        impact.kind, impact.problem = BROKEN, str(exc)
        return impact
    if impact.parts:
        impact.kind = CHANGED
    else:
        # Nothing a reader sees: "unchanged" when its own file is as sent (a sibling's or the
        # layout's edit that does not show here), "no visible change" when its own file was edited.
        impact.kind = UNCHANGED if old.files().get(template) == disk.files().get(template) else INVISIBLE
    return impact


def _outbox_by_key(session: Session, sequence: str, now: datetime) -> dict[str, _Sent]:
    """Per step key of ``sequence`` in the outbox: how many received it, and its last kept version."""
    prefix = f"{SEQUENCE_PREFIX}{sequence}:"
    ours = OutboxMessage.key.startswith(prefix)
    found: dict[str, _Sent] = defaultdict(_Sent)
    sent = and_(ours, OutboxMessage.state == OutboxState.sent)
    for key, count in session.execute(select(OutboxMessage.key, func.count()).where(sent).group_by(OutboxMessage.key)):
        found[key].sent_to = count
    latest = (select(OutboxMessage.key, func.max(OutboxMessage.sent_at).label("at"))
              .where(sent, OutboxMessage.template_version.is_not(None)).group_by(OutboxMessage.key).subquery())
    rows = session.execute(
        select(OutboxMessage.key, OutboxMessage.template, func.max(OutboxMessage.template_version))
        .join(latest, and_(OutboxMessage.key == latest.c.key, OutboxMessage.sent_at == latest.c.at))
        .where(sent).group_by(OutboxMessage.key, OutboxMessage.template))
    for key, template, digest in rows:
        found[key].last = (template, digest)
    # Queued or retrying rows of people who still want the series (a claim suppresses the others).
    waiting = (select(OutboxMessage.key, OutboxMessage.due_at)
               .join(Subscriber, Subscriber.id == OutboxMessage.subscriber_id)
               .where(ours, OutboxMessage.state.in_(_OPEN), Subscriber.status == Status.confirmed,
                      Subscriber.wants_series.is_(True)))
    for key, due in session.execute(waiting):
        found[key].waiting.append(max(due, now))
    return dict(found)
