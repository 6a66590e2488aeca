"""The wording rules on their own: what counts as a health word, a count, a claim, a stale date."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from nurture.content.content_rules import (
    BUILT_IN_HEALTH_TERMS,
    Paragraph,
    claims,
    count_mistakes,
    health_terms,
    load_health_terms,
    past_dates,
)


def phrases(findings) -> list[str]:
    return [f.phrase for f in findings]


@pytest.mark.parametrize(("line", "found"), [
    ("Part 2: how it may work", []),
    ("Esketamine, explained", ["Esketamine"]),  # not also "ketamine" inside it
    ("Ketamine's risks", ["Ketamine"]),
    ("Your psychiatrist, your psychiatric history", ["psychiatrist"]),
    ("Post Traumatic stress", ["Post Traumatic"]),  # not also "Traumatic"
    ("post-traumatic", ["post-traumatic"]),
    ("Treatment resistant?", ["Treatment resistant"]),
    ("A MENTAL\u00a0HEALTH note", ["MENTAL\u00a0HEALTH"]),
    ("Feeling depressed or anxious", ["depressed", "anxious"]),
    ("Secure, therapeutic-sounding words", []),  # 'therapy' is a word, not a prefix
])
def test_health_terms(line: str, found: list[str]) -> None:
    assert phrases(health_terms(line, BUILT_IN_HEALTH_TERMS)) == found


def test_the_file_adds_terms_and_cannot_remove_the_built_in_ones(tmp_path: Path) -> None:
    (tmp_path / "health-terms.txt").write_text("# ours\nOCD  # obsessive-compulsive disorder\n*\n\nketamine\nwinter blue*\n")
    terms = load_health_terms(tmp_path)
    assert terms == BUILT_IN_HEALTH_TERMS + ("ocd", "winter blue*")
    assert phrases(health_terms("Beat the winter blues, and OCD", terms)) == ["OCD", "winter blues"]
    assert load_health_terms(tmp_path / "none") == BUILT_IN_HEALTH_TERMS


@pytest.mark.parametrize(("text", "found"), [
    ("We'll send you four short emails.", []),
    ("We'll send you five short emails.", ["five short emails"]),
    ("Three more emails to come.", []),  # step 1 of 4: three after this one
    ("Two more emails to come.", ["Two more emails"]),
    ("One of the emails covers risks.", []),  # not a count
    ("Email 1 of 4", []),
    ("Email 2 of 4", ["Email 2 of 4"]),
    ("This is the last email.", ["last email"]),
    ("In 2019 emails were fewer.", ["2019 emails"]),
])
def test_counts_in_step_1_of_4(text: str, found: list[str]) -> None:
    assert phrases(count_mistakes(text, number=1, total=4, has_next=True)) == found


def test_the_last_step_may_say_so_and_part_numbers_are_checked_in_subjects() -> None:
    assert count_mistakes("This is the last email.", number=4, total=4, has_next=False) == []
    assert phrases(count_mistakes("Part 3: risks", number=2, total=4, has_next=True, is_line=True)) == ["Part 3"]
    assert count_mistakes("Part 3: risks", number=2, total=4, has_next=True) == []  # a body may mention parts


@pytest.mark.parametrize(("text", "cited", "found"), [
    ('Some call it a "miracle drug".', False, []),
    ("Some call it a \u201cmiracle\u201d.", False, []),
    ("It is a miracle.", False, ["miracle"]),
    ("A secure, curious procedure.", False, []),
    ("It cured me; results guaranteed.", False, ["cured", "guaranteed"]),
    ("100 percent safe, instantly.", False, ["100 percent", "instantly"]),
    ("There are no side-effects.", False, ["no side-effects"]),
    ("About 55% responded.", False, ["55%"]),
    ("About 55% responded.", True, []),
    ("Works for 100% of people.", True, ["100%"]),  # a citation does not make certainty true
    ("Version 2.5 of the guide.", False, []),
])
def test_claims(text: str, cited: bool, found: list[str]) -> None:
    assert phrases(claims(Paragraph(text, cited))) == found


def test_past_dates() -> None:
    text = "Closed on Friday, December 25, 2026 and January 1 2027; research from January 2025; February 30, 2027."
    assert phrases(past_dates(text, date(2026, 12, 25))) == []
    assert phrases(past_dates(text, date(2026, 12, 26))) == ["December 25, 2026"]
    assert phrases(past_dates(text, date(2027, 3, 1))) == ["December 25, 2026", "January 1 2027"]
