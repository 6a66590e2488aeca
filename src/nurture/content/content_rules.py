"""What the words of an email may say: rules the template validator applies to rendered text.

Three kinds, each a pure function over strings that returns :class:`Finding` s (the phrase found
and why it is a problem); :mod:`nurture.template_checks` turns them into file:line problems.

* **Health terms on the lock screen.** A subject or preheader shows on lock screens and in shared
  inboxes: it must not name a drug, a diagnosis or a specialty. The built-in list below is the
  floor; marketing adds words in ``health-terms.txt`` beside the templates (one a line, ``#``
  comments, ``*`` at the end of a word matches any ending: ``psychiatr*``).
* **Counts that disagree with the sequence.** "four short emails" in a sequence of five steps,
  "Email 2 of 4", "Part 3" in the subject of step 2, "the last email" in a step that has a next.
* **Claims** that the FTC's health-claims guidance and the FDA object to: cure, guarantee,
  miracle (unless quoted as others' words), 100%, instant, "no side effects", and a percentage
  with no citation (a link or a DOI) in the same paragraph.
* **Dates that have passed**: "closed on December 25, 2026" in a newsletter sent in January.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from nurture.content.render_values import NUMBER_WORDS

__all__ = [
    "BUILT_IN_HEALTH_TERMS",
    "HEALTH_TERMS_FILE",
    "Finding",
    "Paragraph",
    "claims",
    "count_mistakes",
    "health_terms",
    "load_health_terms",
    "past_dates",
]

HEALTH_TERMS_FILE = "health-terms.txt"

#: Never allowed in a subject or preheader, whatever health-terms.txt says.
BUILT_IN_HEALTH_TERMS = (
    "ketamine", "esketamine", "spravato", "depression", "depressed", "depressive", "antidepressant*",
    "suicid*", "psychiatr*", "ptsd", "post-traumatic", "trauma*", "anxiety", "anxious", "treatment-resistant",
    "therapy", "therapist*", "mental health", "mental illness", "bipolar", "psychosis", "psychotic", "mdd",
)


@dataclass(frozen=True)
class Finding:
    phrase: str  # the words as they appear in the email, to find them in the template
    message: str


@dataclass(frozen=True)
class Paragraph:
    """One block of running text and whether it cites a source (a link or a DOI)."""

    text: str
    cited: bool


# --------------------------------------------------------------------------- health terms

def load_health_terms(templates_dir: Path) -> tuple[str, ...]:
    """The built-in terms plus those in ``health-terms.txt`` beside the templates (if any)."""
    extra: list[str] = []
    path = Path(templates_dir) / HEALTH_TERMS_FILE
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            term = line.split("#", 1)[0].strip().lower()
            if term.rstrip("*").strip() and term not in BUILT_IN_HEALTH_TERMS and term not in extra:
                extra.append(term)
    return BUILT_IN_HEALTH_TERMS + tuple(extra)


def _term_pattern(term: str) -> re.Pattern[str]:
    prefix = term.endswith("*")
    words = [re.escape(word) for word in term.rstrip("*").split()]
    body = r"[\s-]+".join(words).replace(r"\-", r"[\s-]?")  # "post-traumatic" also as "post traumatic"
    ending = r"[\w-]*" if prefix else r"(?![\w-])"
    return re.compile(r"(?<![\w-])" + body + ending, re.IGNORECASE)


def health_terms(line: str, terms: tuple[str, ...]) -> list[Finding]:
    """Health terms in a subject or preheader (a word inside one already found is not said again:
    "Post-Traumatic" matches post-traumatic and trauma*)."""
    found, spans = [], []
    for term in terms:
        match = _term_pattern(term).search(line)
        if match and not any(start <= match.start() and match.end() <= end for start, end in spans):
            spans.append(match.span())
            found.append(Finding(match.group(0), f'"{match.group(0)}" names a drug, a diagnosis or a specialty'))
    return found


# --------------------------------------------------------------------------- counts

_NUMBER = "|".join([r"\d+", *NUMBER_WORDS])
_REMAINING = ("more", "further", "remaining", "other")
_COUNT = re.compile(
    rf"(?<![\w-])(?P<n>{_NUMBER})\s+(?P<adj>(?:[a-z]+\s+){{0,2}}?)emails?\b", re.IGNORECASE
)
_POSITION = re.compile(rf"\bemail\s+(?P<n>{_NUMBER})\s+of\s+(?P<m>{_NUMBER})\b", re.IGNORECASE)
_LAST = re.compile(r"\b(?:last|final)\s+email\b|\blast\s+of\s+the\s+(?:\w+\s+)?emails\b", re.IGNORECASE)
_PART = re.compile(rf"\bpart\s+(?P<n>{_NUMBER})\b", re.IGNORECASE)


def _value(number: str) -> int:
    number = number.lower()
    return int(number) if number.isdigit() else NUMBER_WORDS.index(number)


def count_mistakes(text: str, *, number: int, total: int, has_next: bool, is_line: bool = False) -> list[Finding]:
    """Counts and positions in the text of step ``number`` of ``total`` that disagree with the
    sequence. ``is_line``: a subject or preheader, where "Part N" must be the step's number."""
    found = []
    for match in _COUNT.finditer(text):
        if "of" in match.group("adj").lower().split():
            continue  # "one of the emails" is not a count
        said = _value(match.group("n"))
        remaining = any(word in _REMAINING for word in match.group("adj").lower().split())
        expected = total - number if remaining else total
        if said != expected:
            what = "emails after this one" if remaining else "emails in the sequence"
            found.append(Finding(match.group(0), f'"{match.group(0)}" but there are {expected} {what}; '
                                                 "use {{ step.total }} or {{ step.total|words }}"))
    for match in _POSITION.finditer(text):
        if (_value(match.group("n")), _value(match.group("m"))) != (number, total):
            found.append(Finding(match.group(0), f'"{match.group(0)}" but this is email {number} of {total}; '
                                                 "use {{ step.number }} of {{ step.total }}"))
    if has_next:
        for match in _LAST.finditer(text):
            found.append(Finding(match.group(0), f'"{match.group(0)}" but another step follows this one; '
                                                 "use {% if step.next %} ... {% else %} ... {% endif %}"))
    if is_line:
        for match in _PART.finditer(text):
            if _value(match.group("n")) != number:
                found.append(Finding(match.group(0), f'"{match.group(0)}" but this is step {number} of the sequence'))
    return found


# --------------------------------------------------------------------------- claims

_PERCENT = r"\d{1,3}(?:\.\d+)?\s?(?:%|percent\b|per cent\b)"
_CLAIMS = (
    (re.compile(r"\bcur(?:e|es|ed)\b", re.IGNORECASE), "promises a cure"),
    (re.compile(r"\bguarantee(?:s|d)?\b", re.IGNORECASE), "promises a result"),
    (re.compile(r"\bmiracle\b", re.IGNORECASE), "calls a treatment a miracle (quote it if it is others' words)"),
    (re.compile(r"(?<![\d.])100\s?(?:%|percent\b|per cent\b)", re.IGNORECASE), "claims certainty"),
    (re.compile(r"\binstant(?:ly)?\b", re.IGNORECASE), "promises an instant effect"),
    (re.compile(r"\bno\s+side[\s-]effects?\b", re.IGNORECASE), "denies side effects every medicine has"),
)
_ANY_PERCENT = re.compile(rf"(?<![\d.]){_PERCENT}", re.IGNORECASE)
_QUOTED = re.compile(r'"[^"]*"|\u201c[^\u201d]*\u201d')
_WHY = "the FTC and FDA treat health claims like this as misleading"


def claims(paragraph: Paragraph) -> list[Finding]:
    """Claim words in one paragraph; a percentage counts only without a citation beside it."""
    text = paragraph.text
    quoted = [m.span() for m in _QUOTED.finditer(text)]
    found = []
    for pattern, what in _CLAIMS:
        for match in pattern.finditer(text):
            if "miracle" in what and any(start < match.start() < end for start, end in quoted):
                continue
            found.append(Finding(match.group(0), f'claim: "{match.group(0)}" {what}; {_WHY}'))
    if not paragraph.cited:
        for match in _ANY_PERCENT.finditer(text):
            if _value_is_100(match.group(0)):
                continue  # reported above as a claim of certainty
            found.append(Finding(match.group(0), f'claim: "{match.group(0)}" without a citation in the same '
                                                 "paragraph (link the study or give its DOI)"))
    return found


def _value_is_100(percent: str) -> bool:
    return re.match(r"100(?!\.\d*[1-9])", percent) is not None


# --------------------------------------------------------------------------- dates

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
_DATE = re.compile(rf"\b(?P<month>{'|'.join(_MONTHS)})\s+(?P<day>\d{{1,2}}),?\s+(?P<year>\d{{4}})\b", re.IGNORECASE)


def past_dates(text: str, today: date) -> list[Finding]:
    """Full dates ("December 25, 2026") before ``today``: news that went stale before it was sent.
    A month and year alone ("January 2025") is background, as the newsletter dates its research."""
    found = []
    for match in _DATE.finditer(text):
        try:
            day = date(int(match.group("year")), _MONTHS.index(match.group("month").lower()) + 1, int(match.group("day")))
        except ValueError:
            continue  # "February 30, 2027" is some other mistake
        if day < today:
            found.append(Finding(match.group(0), f'"{match.group(0)}" has passed; update or remove it before this goes out'))
    return found
