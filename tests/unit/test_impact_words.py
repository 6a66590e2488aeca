"""The impact preview's sentences: one per step, the clinic's days, the numbers as counted."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from nurture.feedback.impact import BROKEN, CHANGED, INVISIBLE, NEW, REMOVED, UNCHANGED, UNKEPT, Impact, StepImpact
from nurture.feedback.impact_words import headline, sentence

CHICAGO = ZoneInfo("America/Chicago")
NOW = datetime(2026, 12, 2, 18, 0, tzinfo=timezone.utc)  # Wednesday 2 December, noon in Chicago


def chicago(day: int, hour: int = 9) -> datetime:
    return datetime(2026, 12, day, hour, tzinfo=CHICAGO).astimezone(timezone.utc)


def reaching(step: StepImpact, *days: int) -> StepImpact:
    for day in days:
        step.reach(chicago(day))
    return step


def said(*steps: StepImpact) -> list[str]:
    impact = Impact("nurture", NOW, list(steps))
    return [sentence(s, impact, CHICAGO) for s in steps]


def test_the_sentences_the_issue_asks_for():
    changed = reaching(StepImpact("how-it-may-work", CHANGED, ("subject", "body"), sent_to=90), *[3] * 100, *[11] * 82)
    new = reaching(StepImpact("what-to-expect", NEW), *[3] * 40)
    removed = reaching(StepImpact("risks-old", REMOVED, sent_to=30, last_version="abc"), *[5] * 12)
    assert said(changed, new, removed) == [
        "step `how-it-may-work` changed (subject and body): 182 people will receive the new version over the next "
        "9 days, first tomorrow",
        "new step `what-to-expect`, not sent to anyone yet: 40 people have not passed its place and will get it "
        "tomorrow",
        "removed step `risks-old` (sent to 30 people): 12 people will no longer get it",
    ]
    assert headline(Impact("nurture", NOW, [changed, new, removed])) == \
        "publishing the templates on disk: 1 changed, 1 new, 1 removed"


def test_days_are_the_clinics():
    step = reaching(StepImpact("a", CHANGED, ("look",)), 3, 10)
    assert said(step)[0].endswith("2 people will receive the new version over the next 8 days, first tomorrow")
    later = reaching(StepImpact("b", CHANGED, ("body",)), 10, 12)
    assert said(later)[0].endswith("over the next 10 days, first on Thursday 10 December")
    today = StepImpact("c", CHANGED, ("body",))
    today.reach(chicago(2, 22))  # 04:00 UTC on the 3rd: still the 2nd in Chicago
    assert said(today)[0].endswith("1 person will receive the new version today")


def test_every_other_kind_has_its_own_words():
    unchanged = reaching(StepImpact("welcome", UNCHANGED, sent_to=18, last_version="1e575ae7ab"), 4)
    invisible = StepImpact("risks", INVISIBLE, sent_to=5)
    unkept = reaching(StepImpact("old", UNKEPT, sent_to=7), 3)
    broken = StepImpact("bad", BROKEN, problem="nurture/x.html.j2:4: unexpected '}'")
    gone = StepImpact("ancient", REMOVED, sent_to=2, stuck=1)
    fresh = StepImpact("nobody", NEW)
    words = said(unchanged, invisible, unkept, broken, gone, fresh)
    assert words[0] == ("step `welcome` unchanged (version 1e575ae7ab, sent to 18 people): 1 more person will get it "
                        "over the next 2 days, first on Friday 4 December")
    assert words[1].startswith("step `risks`: no visible change") and words[1].endswith("nobody else will get it")
    assert words[2] == ("step `old` was last sent before versions were kept, so it cannot be compared: 1 person "
                        "will receive the version on disk tomorrow")
    assert words[3] == "step `bad` cannot be rendered: nurture/x.html.j2:4: unexpected '}' (`nurture templates validate` says more)"
    assert words[4] == ("removed step `ancient` (sent to 2 people before versions were kept): who else would have "
                        "got it cannot be told; 1 still queued for it cannot be built without its file")
    assert words[5] == "new step `nobody`, not sent to anyone yet: nobody still in the series will get it"


def test_a_headline_when_nothing_visible_changed():
    impact = Impact("nurture", NOW, [StepImpact("a", UNCHANGED), StepImpact("b", INVISIBLE)])
    assert headline(impact) == "nothing a reader would see has changed since the last sends (1 no visible change, 1 unchanged)"
    assert headline(Impact("nurture", NOW, [])) == "the sequence 'nurture' has no steps on disk and none were sent"


def test_a_step_with_a_condition_says_its_count_is_at_most_that_many():
    reminder = reaching(StepImpact("invite-reminder", NEW, condition="only_if: not_clicked:consultation-invite"),
                        5, 5, 6)
    assert said(reminder) == [
        "step `invite-reminder`, not sent to anyone yet: 3 people have not passed its place and will get it over "
        "the next 4 days, first on Saturday 5 December (at most: it goes only to those its condition "
        "`only_if: not_clicked:consultation-invite` lets through when it falls due)"]
    nobody = StepImpact("invite-reminder", NEW, condition="only_if: not_clicked:consultation-invite")
    assert "at most" not in said(nobody)[0]  # no count, nothing to qualify
