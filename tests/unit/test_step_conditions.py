"""Behaviour-aware steps: the front-matter vocabulary, the validator's messages for it, how an
extra (conditional) step is numbered, and the rule that decides whether it goes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nurture.content.sequences import Condition, Place, TemplateFormatError, load_sequences, place_email
from nurture.content.template_checks import Problem, check_templates
from nurture.sending.step_conditions import Behaviour, consented_to_extras, is_skipped, skip_reason

SHIPPED = Path(__file__).resolve().parents[2] / "templates" / "emails"
REMINDER = "nurture/45-invite-reminder.html.j2"
INVITE = "nurture/40-consultation-invite.html.j2"
CONSULTATION = "https://clinic.example/consultation"


@pytest.fixture
def emails(tmp_path: Path) -> Path:
    target = tmp_path / "emails"
    shutil.copytree(SHIPPED, target)
    return target


def plant(path: Path, old: str, new: str) -> int:
    """Replace ``old`` once in the file; the 1-based line where it was."""
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return text[: text.index(old)].count("\n") + 1


def errors(emails: Path) -> list[Problem]:
    return [p for p in check_templates(emails, base_url="https://nurture.example", dev=False, strict=True)
            if p.severity == "error"]


# --------------------------------------------------------------------------- the vocabulary

def test_the_shipped_reminder_has_its_two_conditions() -> None:
    reminder = load_sequences(SHIPPED)["nurture"].step("invite-reminder")
    assert reminder is not None and reminder.is_extra
    assert [str(c) for c in reminder.conditions] == ["skip_if: clicked:consultation",
                                                     "only_if: not_clicked:consultation-invite"]
    assert [c.step_key for c in reminder.conditions] == [None, "consultation-invite"]


def test_a_step_may_skip_on_a_click_in_an_earlier_step(emails: Path) -> None:
    plant(emails / REMINDER, "skip_if: clicked:consultation", "skip_if: clicked:how-it-may-work")
    reminder = load_sequences(emails)["nurture"].step("invite-reminder")
    assert reminder.conditions[0] == Condition("skip_if", "clicked", "how-it-may-work", reminder.conditions[0].line)
    assert errors(emails) == []


@pytest.mark.parametrize("line, message", [
    ("only_if: opened:consultation-invite",
     "unknown condition 'opened:consultation-invite': only_if must be not_clicked:<step-key>"),
    ("only_if: clicked:consultation-invite",
     "unknown condition 'clicked:consultation-invite': only_if must be not_clicked:<step-key>"),
    ("only_if: not_clicked:consultation",
     "unknown condition 'not_clicked:consultation': only_if must be not_clicked:<step-key> (to leave out people "
     "who clicked the consultation link, write 'skip_if: clicked:consultation')"),
    ("only_if: not_clicked",
     "malformed condition 'not_clicked': only_if must be not_clicked:<step-key>"),
    ("only_if: not_clicked:Consultation Invite",
     "malformed condition 'not_clicked:Consultation Invite': only_if must be not_clicked:<step-key>"),
    ("only_if: not_clicked:-invite",
     "malformed condition 'not_clicked:-invite': '-invite' is not a step key; only_if must be not_clicked:<step-key>"),
])
def test_the_validator_rejects_an_unknown_or_malformed_condition_at_its_line(emails: Path, line: str,
                                                                             message: str) -> None:
    path = emails / REMINDER
    at = plant(path, "only_if: not_clicked:consultation-invite", line)
    assert errors(emails) == [Problem(path, at, message)]


def test_skip_if_takes_only_clicked(emails: Path) -> None:
    path = emails / REMINDER
    at = plant(path, "skip_if: clicked:consultation", "skip_if: not_clicked:consultation")
    assert errors(emails) == [Problem(path, at, "unknown condition 'not_clicked:consultation': skip_if must be "
                                                "clicked:consultation or clicked:<step-key>")]


@pytest.mark.parametrize("target, why", [
    ("invitation", "names no step of this sequence (keys: consultation-invite, how-it-may-work, invite-reminder, "
                   "risks-side-effects, welcome-history)"),
    ("invite-reminder", "refers to this step itself"),
])
def test_the_validator_rejects_a_step_key_that_is_not_an_earlier_step(emails: Path, target: str, why: str) -> None:
    path = emails / REMINDER
    at = plant(path, "only_if: not_clicked:consultation-invite", f"only_if: not_clicked:{target}")
    assert errors(emails) == [Problem(path, at, f"the condition 'only_if: not_clicked:{target}' {why}")]


def test_the_validator_rejects_a_condition_on_a_later_step(emails: Path) -> None:
    path = emails / INVITE
    at = plant(path, "delay_days: 8\n", "delay_days: 8\nskip_if: clicked:invite-reminder\n") + 1
    assert errors(emails) == [Problem(path, at, "the condition 'skip_if: clicked:invite-reminder' refers to a later "
                                                "step (a condition can only look at an earlier step)")]


def test_a_condition_is_given_once_and_only_on_a_sequence_step(emails: Path) -> None:
    path = emails / REMINDER
    at = plant(path, "skip_if: clicked:consultation", "skip_if: clicked:consultation\nskip_if: clicked:welcome-history") + 1
    assert errors(emails) == [Problem(path, at, "'skip_if' is given twice (first on line 7)")]
    newsletter = next((emails / "newsletter").glob("*.html.j2"))
    text = newsletter.read_text(encoding="utf-8")
    newsletter.write_text(text.replace("---\n", "---\nskip_if: clicked:consultation\n", 1), encoding="utf-8")
    assert Problem(newsletter, 2, "only sequence steps may have a condition; remove skip_if") in errors(emails)


def test_the_loader_refuses_a_sequence_with_a_bad_condition(emails: Path) -> None:
    # The planner reads the sequence through load_sequences: a bad condition holds back new steps.
    plant(emails / REMINDER, "only_if: not_clicked:consultation-invite", "only_if: not_clicked:nothing-here")
    with pytest.raises(TemplateFormatError, match="45-invite-reminder.html.j2:6: the condition"):
        load_sequences(emails)


# --------------------------------------------------------------------------- numbering

def test_an_extra_is_not_numbered_counted_or_announced() -> None:
    invite, reminder = place_email(SHIPPED, INVITE), place_email(SHIPPED, REMINDER)
    assert (invite.number, invite.total, invite.next) == (4, 4, None)  # "the last of our four emails"
    assert (reminder.number, reminder.total, reminder.next) == (4, 4, None)


def test_a_numbered_step_after_an_extra_is_announced_and_numbered_past_it() -> None:
    sequence = load_sequences(SHIPPED)["nurture"]
    steps = list(sequence.steps) + [sequence.steps[1].__class__(**{**sequence.steps[1].__dict__, "key": "later",
                                                                   "position": 5, "delay_days": 15})]
    place = Place.in_sequence(steps, 3)  # the invitation
    assert (place.number, place.total, place.next.key) == (4, 5, "later")
    assert Place.in_sequence(steps, 5).number == 5


# --------------------------------------------------------------------------- the rule

def reminder():
    return load_sequences(SHIPPED)["nurture"].step("invite-reminder")


AGREED = dict(consent_version="2026-12-02", extras_consented=True)
INVITED = {"seq:nurture:consultation-invite"}


@pytest.mark.parametrize("behaviour, reason", [
    (Behaviour(sent_keys=INVITED, **AGREED), None),
    (Behaviour(clicked_urls={CONSULTATION}, clicked_keys={"seq:nurture:how-it-may-work"}, sent_keys=INVITED, **AGREED),
     "skipped: clicked the consultation link"),
    (Behaviour(clicked_urls={"https://clinic.example/"}, clicked_keys={"seq:nurture:consultation-invite"},
               sent_keys=INVITED, **AGREED), "skipped: clicked a link in consultation-invite"),
    (Behaviour(clicked_urls={"https://clinic.example/"}, clicked_keys={"seq:nurture:welcome-history"},
               sent_keys=INVITED, **AGREED), None),
    (Behaviour(**AGREED), "skipped: consultation-invite was not sent to them"),
    (Behaviour(sent_keys=INVITED, consent_version="2026-11-28"),
     "skipped: the wording they agreed to (2026-11-28) promised no reminder"),
    (Behaviour(sent_keys=INVITED), "skipped: the wording they agreed to (none recorded) promised no reminder"),
])
def test_skip_reason(behaviour: Behaviour, reason: str | None) -> None:
    assert skip_reason(reminder(), behaviour, consultation_url=CONSULTATION) == reason


def test_only_the_new_consent_wording_announces_a_reminder() -> None:
    from nurture.people.consent_ledger import CONSENT_VERSION, CONSENT_WORDINGS

    assert not consented_to_extras(CONSENT_WORDINGS["2026-11-28"])  # "four emails over about a week"
    assert consented_to_extras(CONSENT_WORDINGS[CONSENT_VERSION]) and not consented_to_extras(None)


def test_a_step_without_conditions_always_goes_and_a_skipped_row_is_known_by_its_reason() -> None:
    welcome = load_sequences(SHIPPED)["nurture"].steps[0]
    assert skip_reason(welcome, Behaviour(), consultation_url=CONSULTATION) is None
    assert is_skipped("suppressed", "skipped: clicked the consultation link")
    assert not is_skipped("suppressed", None) and not is_skipped("failed", "skipped: x")
