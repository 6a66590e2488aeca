"""The funnel for `nurture stats` and the /admin dashboard: pure queries, no HTTP, no clock.

What ``since`` means: the funnel follows a *cohort*, the people who signed up at or after
``since`` (everybody when it is None): how many confirmed, how many were sent each step, clicked,
unsubscribed after it, bounced, and clicked the consultation link; and who booked a consultation
(the goal the sequence is for, recorded by people.goals), credited to an email. Newsletter
issues are not tied to a cohort: the broadcasts listed are those due at or after ``since``, with
all their recipients.

An unsubscribe carries no message id (the person may have used any link, or the List-Unsubscribe
header), so it is credited to the last marketing email (sequence step or broadcast) sent to that
person before they left: the one that most plausibly made them go.

Counting is done by the database with GROUP BY, a handful of queries whatever the list size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime

from sqlalchemy import and_, case, distinct, func, or_, select
from sqlalchemy.orm import Session

from nurture.content.sequences import Sequence
from nurture.message_key import BROADCAST_PREFIX, MARKETING_PREFIXES, MessageKey
from nurture.models import Broadcast, Event, Goal, OutboxMessage, OutboxState, Status, Subscriber
from nurture.sending.step_conditions import skipped_rows

__all__ = ["Bookings", "BroadcastFigures", "Funnel", "StepFigures", "bookings", "funnel", "trackable_links",
           "with_bookings"]

# Confirmed and still wanting the series: the steps not sent to them yet are still to come.
_IN_SERIES = and_(Subscriber.status == Status.confirmed, Subscriber.wants_series.is_(True),
                  Subscriber.confirmed_at.is_not(None))


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


class _Rates:
    """Rates of an email's figures (None when nothing was sent)."""

    sent: int
    clickers: int
    unsubscribed: int

    @property
    def click_rate(self) -> float | None:
        return _rate(self.clickers, self.sent)

    @property
    def unsubscribe_rate(self) -> float | None:
        return _rate(self.unsubscribed, self.sent)


@dataclass(frozen=True)
class StepFigures(_Rates):
    """One sequence step. ``clickers``, ``openers``, ``bounced``, ``unsubscribed`` and
    ``goal_clickers`` count people, not events (two clicks by one person are one clicker)."""

    key: str
    position: int
    subject: str
    sent: int = 0
    clickers: int = 0
    openers: int = 0
    unsubscribed: int = 0
    bounced: int = 0
    goal_clickers: int = 0  # clicked the consultation link in this email
    # The confirmed people not sent this step, split so a later step does not read as drop-off:
    # still in the series, so it comes when due (or is queued now), or stopped (left the series
    # or everything, bounced, complained, erased, this email failed for them, or its condition skipped it).
    not_yet_due: int = 0
    stopped: int = 0
    # False when the email has no link of its own to track (only the unsubscribe and preferences
    # links, never tracked, and the footer every email has): its click figures mean nothing. None: not known.
    trackable: bool | None = None


@dataclass(frozen=True)
class BroadcastFigures(_Rates):
    id: int
    template: str
    audience: str
    status: str
    send_at: datetime
    recipients: int
    track_opens: bool
    sent: int = 0
    clickers: int = 0
    openers: int = 0
    unsubscribed: int = 0
    bounced: int = 0

    @property
    def key(self) -> str:
        """The outbox key of this issue's copies (the admin page names its figures by it)."""
        return str(MessageKey.broadcast(self.id))


@dataclass(frozen=True)
class Bookings:
    """The goal reached: people of the cohort who booked a consultation (by the webhook, the CLI or
    an import; unmatched bookings are nobody's and are not here), and what each is credited to.
    A person counts once, by their first booking."""

    booked: int = 0
    after_click: int = 0  # of them, clicked the consultation link (in any email) before booking
    # Message key -> people whose booking is credited to that email: the last marketing email
    # (sequence step or newsletter) sent to them before they booked.
    by_last_email: dict[str, int] = field(default_factory=dict)
    # Message key -> people whose last click on the consultation link before booking was in that email.
    by_click: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Funnel:
    since: datetime | None
    sequence: str
    consultation_url: str
    signups: int
    confirmed: int
    goal: int  # people of the cohort who clicked the consultation link (from any email)
    steps: list[StepFigures] = field(default_factory=list)
    broadcasts: list[BroadcastFigures] = field(default_factory=list)
    bookings: Bookings = field(default_factory=Bookings)

    @property
    def confirm_rate(self) -> float | None:
        return _rate(self.confirmed, self.signups)

    @property
    def booking_rate(self) -> float | None:
        """Bookings per confirmed subscriber: the goal the sequence is for."""
        return _rate(self.bookings.booked, self.confirmed)

    @property
    def goal_rate(self) -> float | None:
        """Goal clicks per confirmed subscriber: the share of the people in the series who asked."""
        return _rate(self.goal, self.confirmed)

    def to_dict(self) -> dict:
        """Plain JSON-ready data for ``nurture stats --json``: ISO dates, rates as fractions."""
        def rates(obj, names):
            return {f"{name}_rate": _round(getattr(obj, f"{name}_rate")) for name in names}

        return {
            "since": _iso(self.since),
            "sequence": self.sequence,
            "consultation_url": self.consultation_url,
            "signups": self.signups,
            "confirmed": self.confirmed,
            "confirm_rate": _round(self.confirm_rate),
            "goal": self.goal,
            "goal_rate": _round(self.goal_rate),
            "steps": [asdict(s) | rates(s, ("click", "unsubscribe")) for s in self.steps],
            "broadcasts": [asdict(b) | {"send_at": _iso(b.send_at)} | rates(b, ("click", "unsubscribe"))
                           for b in self.broadcasts],
            "bookings": asdict(self.bookings) | {"booking_rate": _round(self.booking_rate)},
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def funnel(session: Session, *, since: datetime | None, sequence: Sequence, consultation_url: str,
           trackable: Callable[[str], bool | None] = lambda _template: None) -> Funnel:
    """The funnel of the people who signed up since ``since`` (everybody if None), step by step in
    sequence order, with the goal and the broadcasts due since then. ``trackable(template)`` says
    whether a step's email has a link of its own that clicks could be counted on (see :func:`trackable_links`)."""
    in_cohort = Subscriber.created_at >= since if since is not None else None

    people = select(func.count(), func.count(Subscriber.confirmed_at), func.count(case((_IN_SERIES, 1))))
    people = people.select_from(Subscriber)
    if in_cohort is not None:
        people = people.where(in_cohort)
    signups, confirmed, in_series = session.execute(people).one()

    goal_click = and_(Event.kind == "clicked", _is_goal(consultation_url))
    goal_query = (
        select(func.count(distinct(func.coalesce(OutboxMessage.subscriber_id, Event.subscriber_id))))
        .select_from(Event)
        .outerjoin(OutboxMessage, OutboxMessage.id == Event.outbox_id)
        .join(Subscriber, Subscriber.id == func.coalesce(OutboxMessage.subscriber_id, Event.subscriber_id))
        .where(goal_click)
    )
    if in_cohort is not None:
        goal_query = goal_query.where(in_cohort)
    goal = session.scalar(goal_query) or 0

    issues = select(Broadcast).order_by(Broadcast.send_at.desc(), Broadcast.id.desc())
    if since is not None:
        issues = issues.where(Broadcast.send_at >= since)
    broadcasts = session.scalars(issues).all()

    step_keys = {str(MessageKey.sequence_step(sequence.name, step.key)): step for step in sequence.steps}
    issue_keys = {str(MessageKey.broadcast(b.id)): b for b in broadcasts}
    keys = [*step_keys, *issue_keys]
    per_key = _per_message(session, keys, in_cohort, goal_click) if keys else {}
    unsubscribed = _unsubscribes_by_key(session, keys, in_cohort) if keys else {}

    progress = _progress(session, list(step_keys), in_cohort, confirmed, in_series) if step_keys else {}
    steps = [
        StepFigures(step.key, step.position, step.subject, **per_key.get(key, {}),
                    unsubscribed=unsubscribed.get(key, 0), **progress.get(key, {}), trackable=trackable(step.template))
        for key, step in step_keys.items()
    ]
    figures = []
    for key, b in issue_keys.items():
        counts = {k: v for k, v in per_key.get(key, {}).items() if k != "goal_clickers"}
        figures.append(BroadcastFigures(b.id, b.template, b.audience, b.status, b.send_at, b.recipients,
                                        b.track_opens, **counts, unsubscribed=unsubscribed.get(key, 0)))
    return Funnel(since, sequence.name, consultation_url, signups, confirmed, goal, steps, figures)


def with_bookings(session: Session, figures: Funnel) -> Funnel:
    """``figures`` with its :class:`Bookings` filled in (one more query), for the same cohort.
    Kept apart from :func:`funnel` so the funnel itself stays the handful of queries it is."""
    return replace(figures, bookings=bookings(session, since=figures.since, consultation_url=figures.consultation_url))


def bookings(session: Session, *, since: datetime | None, consultation_url: str) -> Bookings:
    """People of the cohort who booked, and the email each booking is credited to, two ways: the
    last marketing email sent before the booking (as an unsubscribe is credited), and the email
    whose consultation link they last clicked before it. One query, grouped by the pair of
    credited emails, whatever the list size."""
    first = (select(Goal.subscriber_id.label("subscriber_id"), func.min(Goal.booked_at).label("booked_at"))
             .where(Goal.subscriber_id.is_not(None)).group_by(Goal.subscriber_id).subquery())
    last_email = (
        select(OutboxMessage.key)
        .where(OutboxMessage.subscriber_id == first.c.subscriber_id, OutboxMessage.sent_at.is_not(None),
               OutboxMessage.sent_at <= first.c.booked_at,
               or_(*(OutboxMessage.key.startswith(prefix) for prefix in MARKETING_PREFIXES)))
        .order_by(OutboxMessage.sent_at.desc(), OutboxMessage.id.desc()).limit(1)
        .correlate(first).scalar_subquery()
    )
    last_click = (
        select(OutboxMessage.key)
        .select_from(Event).join(OutboxMessage, OutboxMessage.id == Event.outbox_id)
        .where(OutboxMessage.subscriber_id == first.c.subscriber_id, Event.kind == "clicked",
               _is_goal(consultation_url), Event.created_at <= first.c.booked_at)
        .order_by(Event.created_at.desc(), Event.id.desc()).limit(1)
        .correlate(first).scalar_subquery()
    )
    credited = (select(first.c.subscriber_id, last_email.label("email_key"), last_click.label("click_key"))
                .join(Subscriber, Subscriber.id == first.c.subscriber_id))
    if since is not None:
        credited = credited.where(Subscriber.created_at >= since)
    credited = credited.subquery()
    figures = Bookings()
    booked = after_click = 0
    pairs = session.execute(select(credited.c.email_key, credited.c.click_key, func.count())
                            .group_by(credited.c.email_key, credited.c.click_key))
    for email_key, click_key, people in pairs:
        booked += people
        if email_key is not None:
            figures.by_last_email[email_key] = figures.by_last_email.get(email_key, 0) + people
        if click_key is not None:
            after_click += people
            figures.by_click[click_key] = figures.by_click.get(click_key, 0) + people
    return replace(figures, booked=booked, after_click=after_click)


def _is_goal(url: str):
    # The goal link as written, or with tracking parameters or a fragment added to it.
    return or_(Event.detail == url, Event.detail.startswith(url + "?", autoescape=True),
               Event.detail.startswith(url + "#", autoescape=True))


def _per_message(session: Session, keys: list[str], in_cohort, goal_click) -> dict[str, dict[str, int]]:
    """Sent, clickers, openers, bounced and goal clickers per message key, in one GROUP BY."""
    who = OutboxMessage.subscriber_id

    def people(condition):
        return func.count(distinct(case((condition, who))))

    query = (
        select(
            OutboxMessage.key,
            func.count(distinct(case((OutboxMessage.sent_at.is_not(None), OutboxMessage.id)))),
            people(Event.kind == "clicked"),
            people(Event.kind == "opened"),
            people(Event.kind == "bounced"),
            people(goal_click),
        )
        .select_from(OutboxMessage)
        .outerjoin(Event, and_(Event.outbox_id == OutboxMessage.id,
                               Event.kind.in_(("clicked", "opened", "bounced"))))
        .where(OutboxMessage.key.in_(keys))
        .group_by(OutboxMessage.key)
    )
    query = _cohort(query, in_cohort)
    return {
        key: dict(sent=sent, clickers=clickers, openers=openers, bounced=bounced, goal_clickers=goal)
        for key, sent, clickers, openers, bounced, goal in session.execute(query)
    }


def _progress(session: Session, keys: list[str], in_cohort, confirmed: int, in_series: int) -> dict[str, dict[str, int]]:
    """Per step, the confirmed people of the cohort not sent it: ``not_yet_due`` (still in the
    series, ``in_series`` of them, and the step not failed for them) and ``stopped`` (the rest).
    People either still get a step or do not, so sent + not_yet_due + stopped = confirmed."""
    active = _IN_SERIES
    in_scope = [in_cohort] if in_cohort is not None else []
    rows = session.execute(
        select(OutboxMessage.key,
               func.count(distinct(case((OutboxMessage.sent_at.is_not(None), OutboxMessage.subscriber_id)))),
               func.count(distinct(case((and_(active, or_(OutboxMessage.sent_at.is_not(None),
                                                          OutboxMessage.state == OutboxState.failed,
                                                          skipped_rows())),
                                         OutboxMessage.subscriber_id)))))
        .join(Subscriber, Subscriber.id == OutboxMessage.subscriber_id)
        .where(OutboxMessage.key.in_(keys), Subscriber.confirmed_at.is_not(None), *in_scope)
        .group_by(OutboxMessage.key)
    )
    done = {key: (sent, active_done) for key, sent, active_done in rows}
    figures = {}
    for key in keys:
        sent, active_done = done.get(key, (0, 0))
        waiting = in_series - active_done
        figures[key] = dict(not_yet_due=waiting, stopped=max(confirmed - sent - waiting, 0))
    return figures


def trackable_links(renderer, templates: Iterable[str], *, track_clicks: bool) -> Callable[[str], bool | None]:
    """``funnel``'s ``trackable``: renders each template for a sample person and says whether it
    has a link of its own that clicks are counted on. The unsubscribe and preferences links are
    never tracked, and links every email shares (the layout's footer: the crisis line, the
    clinic's site) say nothing about that email, so neither counts. None: the template does not
    render (reported elsewhere), so not known."""
    from nurture.sending.tracked_links import links_in, untracked_links

    if not track_clicks:
        return lambda _template: False  # nothing is counted: no need to render anything
    templates = list(templates)
    sample = renderer.sample_recipient()
    own = untracked_links(sample)
    links: dict[str, set[str] | None] = {}
    for template in templates:
        try:
            links[template] = set(links_in(renderer.render(template, sample).html)) - own
        except Exception:  # noqa: BLE001 - a broken template is reported elsewhere; here it is "not known"
            links[template] = None
    rendered = [found for found in links.values() if found is not None]
    shared = set.intersection(*rendered) if len(rendered) > 1 else set()

    def check(template: str) -> bool | None:
        found = links.get(template)
        return None if found is None else bool(found - shared)

    return check


def _unsubscribes_by_key(session: Session, keys: list[str], in_cohort) -> dict[str, int]:
    """People who unsubscribed, per the last marketing email sent to them before they did."""
    latest = (
        select(OutboxMessage.id)
        .where(
            OutboxMessage.subscriber_id == Event.subscriber_id,
            OutboxMessage.sent_at.is_not(None),
            OutboxMessage.sent_at <= Event.created_at,
            or_(*(OutboxMessage.key.startswith(prefix) for prefix in MARKETING_PREFIXES)),
        )
        .order_by(OutboxMessage.sent_at.desc(), OutboxMessage.id.desc())
        .limit(1)
        .correlate(Event)
        .scalar_subquery()
    )
    credited = (
        select(Event.subscriber_id.label("subscriber_id"), latest.label("outbox_id"))
        .where(Event.kind == "unsubscribed", Event.subscriber_id.is_not(None))
        .subquery()
    )
    query = (
        select(OutboxMessage.key, func.count(distinct(credited.c.subscriber_id)))
        .select_from(credited)
        .join(OutboxMessage, OutboxMessage.id == credited.c.outbox_id)
        .where(OutboxMessage.key.in_(keys))
        .group_by(OutboxMessage.key)
    )
    return {key: count for key, count in session.execute(_cohort(query, in_cohort))}


def _cohort(query, in_cohort):
    """Sequence rows of people in the cohort only; broadcasts count all their recipients."""
    if in_cohort is None:
        return query
    return query.join(Subscriber, Subscriber.id == OutboxMessage.subscriber_id).where(
        or_(OutboxMessage.key.startswith(BROADCAST_PREFIX), in_cohort))
