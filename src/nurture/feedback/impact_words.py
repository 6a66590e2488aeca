"""The impact preview in plain words, for the command line and the studio: one sentence a step.

Days are the clinic's days (``NURTURE_TIMEZONE``): each person gets their email on their own local
day, but marketing reads one calendar.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from nurture.feedback.impact import BROKEN, CHANGED, INVISIBLE, NEW, REMOVED, UNCHANGED, UNKEPT, Impact, StepImpact

__all__ = ["headline", "sentence"]


def _people(count: int) -> str:
    return "1 person" if count == 1 else f"{count:,} people"


def _and(parts: tuple[str, ...]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _day(instant: datetime, now: datetime, zone: ZoneInfo) -> str:
    days = (instant.astimezone(zone).date() - now.astimezone(zone).date()).days
    if days <= 0:
        return "today"
    if days == 1:
        return "tomorrow"
    return f"on {instant.astimezone(zone):%A} {instant.astimezone(zone).day} {instant.astimezone(zone):%B}"


def _over(step: StepImpact, now: datetime, zone: ZoneInfo) -> str:
    """"over the next 9 days, first on Thursday 3 December", "today" ..."""
    assert step.first is not None and step.last is not None
    days = (step.last.astimezone(zone).date() - now.astimezone(zone).date()).days
    first = _day(step.first, now, zone)
    if days <= 0:
        return "today"
    if days == 1 and first == "today":
        return "today and tomorrow"
    span = "tomorrow" if days == 1 else f"over the next {days} days"
    return span if first == "tomorrow" and days == 1 else f"{span}, first {first}"


def sentence(step: StepImpact, impact: Impact, zone: ZoneInfo) -> str:
    """One step's impact, e.g. "step `how-it-may-work` changed (subject and body): 182 people will
    receive the new version over the next 9 days, first on Thursday 3 December". A step with a
    condition says its count is at most that many, and why."""
    said = _sentence(step, impact, zone)
    if step.condition and step.people and step.kind != REMOVED:
        return f"{said} (at most: it goes only to those its condition `{step.condition}` lets through when it falls due)"
    return said


def _sentence(step: StepImpact, impact: Impact, zone: ZoneInfo) -> str:
    now, name = impact.now, f"`{step.key}`"
    reach = _over(step, now, zone) if step.people else ""
    if step.kind == CHANGED:
        head = f"step {name} changed ({_and(step.parts)})"
        return f"{head}: " + (f"{_people(step.people)} will receive the new version {reach}" if step.people
                              else "nobody still in the series will receive it")
    if step.kind == INVISIBLE:
        more = f"{_people(step.people)} will get it {reach}" if step.people else "nobody else will get it"
        return (f"step {name}: no visible change (its file was edited, but the email a reader gets is the same: "
                f"whitespace, comments or the like): {more}")
    if step.kind == UNCHANGED:
        who = "person" if step.people == 1 else "people"
        more = f"{step.people:,} more {who} will get it {reach}" if step.people else "nobody else will get it"
        return f"step {name} unchanged (version {step.last_version}, sent to {_people(step.sent_to)}): {more}"
    if step.kind == NEW:
        label = "new step" if any(s.sent_to for s in impact.steps) else "step"
        if not step.people:
            return f"{label} {name}, not sent to anyone yet: nobody still in the series will get it"
        return (f"{label} {name}, not sent to anyone yet: {_people(step.people)} have not passed its place "
                f"and will get it {reach}")
    if step.kind == REMOVED:
        stuck = (f"; {step.stuck} still queued for it cannot be built without its file" if step.stuck else "")
        if step.last_version is None:
            return (f"removed step {name} (sent to {_people(step.sent_to)} before versions were kept): "
                    f"who else would have got it cannot be told{stuck}")
        return (f"removed step {name} (sent to {_people(step.sent_to)}): "
                f"{_people(step.people)} will no longer get it{stuck}")
    if step.kind == UNKEPT:
        will = f"{_people(step.people)} will receive the version on disk {reach}" if step.people else "nobody else will get it"
        return f"step {name} was last sent before versions were kept, so it cannot be compared: {will}"
    assert step.kind == BROKEN
    return f"step {name} cannot be rendered: {step.problem} (`nurture templates validate` says more)"


def headline(impact: Impact) -> str:
    """The whole edit in one line."""
    counts: dict[str, int] = {}
    for step in impact.steps:
        counts[step.kind] = counts.get(step.kind, 0) + 1
    if not impact.steps:
        return f"the sequence {impact.sequence!r} has no steps on disk and none were sent"
    order = (CHANGED, NEW, REMOVED, BROKEN, INVISIBLE, UNKEPT, UNCHANGED)
    said = ", ".join(f"{counts[kind]} {kind}" for kind in order if counts.get(kind))
    if not impact.changes:
        return f"nothing a reader would see has changed since the last sends ({said})"
    return f"publishing the templates on disk: {said}"
