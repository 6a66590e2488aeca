"""The dashboard's charts as geometry (SVG drawn by the page template) and the filters that
format its figures. Pure functions of the report figures: no request, no database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from nurture.feedback import funnel_figures


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    width: float  # percent of the chart width
    kind: str  # css class: people, step, goal
    note: str = ""  # what follows the number: "· 74% of signups", "sent · 3 clicked (12%)"
    clicked: int | None = None  # for steps: the people who clicked, drawn over the bar
    clicked_width: float = 0.0
    figure: str = ""  # data-figure name, so tests and people can find the number


@dataclass(frozen=True)
class FunnelChart:
    bars: list[Bar]
    row: int = 46  # px per bar, label line included

    @property
    def height(self) -> int:
        return self.row * len(self.bars) + 4


def funnel_chart(funnel: funnel_figures.Funnel) -> FunnelChart:
    """Horizontal bars, one per stage, all on the same scale (the largest stage fills the width)."""
    biggest = max([funnel.signups, funnel.confirmed, funnel.goal, *(s.sent for s in funnel.steps), 1])

    def width(n: int) -> float:
        return round(100 * n / biggest, 2)

    bars = [
        Bar("Signed up", funnel.signups, width(funnel.signups), "people", figure="signups"),
        Bar("Confirmed", funnel.confirmed, width(funnel.confirmed), "people",
            _share(funnel.confirm_rate, "of signups"), figure="confirmed"),
    ]
    for n, step in enumerate(funnel.steps, start=1):
        clicked = None if step.trackable is False else step.clickers  # no links: no click bar either
        bars.append(Bar(f"Email {n} · {step.key}", step.sent, width(step.sent), "step", _step_note(step),
                        clicked, width(clicked or 0), figure=f"step:{step.key}:sent"))
    bars.append(Bar("Clicked “book a consultation”", funnel.goal, width(funnel.goal), "goal",
                    _share(funnel.goal_rate, "of confirmed"), figure="goal"))
    return FunnelChart(bars)


def _step_note(step: funnel_figures.StepFigures) -> str:
    """What follows a step's sent figure: its clicks (or that it has no link to click), then who
    has not had it yet and why, so a later email's smaller bar is not read as people dropping off."""
    parts = ["sent"]
    if step.trackable is False:
        parts.append("no links of its own")
    elif step.sent:
        parts.append(f"{step.clickers:,} clicked ({pct(step.click_rate)})")
    if step.not_yet_due:
        parts.append(f"{step.not_yet_due:,} not yet due")
    if step.stopped:
        parts.append(f"{step.stopped:,} stopped")
    return " · ".join(parts)


@dataclass(frozen=True)
class DayBar:
    day: date
    count: int
    x: float
    y: float
    height: float


@dataclass(frozen=True)
class PerDayChart:
    bars: list[DayBar]
    peak: int
    total: int
    width: int = 300
    height: int = 100

    @property
    def peak_days(self) -> list[date]:
        """The day(s) with the most signups, for "busiest day"."""
        return [b.day for b in self.bars if b.count == self.peak] if self.peak else []

    @property
    def ticks(self) -> list[tuple[int, float]]:
        """Y-axis labels (value, y in the 100-unit box): 0, the middle when it is a whole number, the peak."""
        if not self.peak:
            return [(0, 100.0)]
        marks = [(0, 100.0)]
        if self.peak >= 2 and self.peak % 2 == 0:
            marks.append((self.peak // 2, 100 - 48.0))
        marks.append((self.peak, 4.0))
        return marks


def per_day_chart(days: list[tuple[date, int]]) -> PerDayChart:
    """Vertical bars in a 300x100 box the page stretches to its width. A day with no signups
    still gets a 1-unit stub, so the row of days reads as a timeline, not as missing data."""
    peak = max((n for _, n in days), default=0)
    slot = 300 / max(len(days), 1)
    bars = []
    for i, (day, n) in enumerate(days):
        h = max(96 * n / peak, 1) if peak else 1
        bars.append(DayBar(day, n, round(i * slot + slot * 0.12, 2), round(100 - h, 2), round(h, 2)))
    return PerDayChart(bars, peak, sum(n for _, n in days))


# ------------------------------------------------------------------------- formatting filters

def _share(rate: float | None, what: str) -> str:
    return f"· {pct(rate)} {what}" if rate is not None else ""


def pct(rate: float | None) -> str:
    if rate is None:
        return "–"
    percent = rate * 100
    return f"{percent:.0f}%" if percent >= 10 or percent == 0 else f"{percent:.1f}%"


def num(n: int) -> str:
    return f"{n:,}"


def when(instant: datetime | None, zone: ZoneInfo) -> str:
    if instant is None:
        return ""
    return instant.astimezone(zone).strftime("%d %b %Y, %H:%M").lstrip("0")


def day(d: date) -> str:
    return d.strftime("%d %b").lstrip("0")
