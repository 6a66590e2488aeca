"""Sequence definitions, read from the email templates marketing edits.

Layout of ``templates/emails``::

    layout.html.j2            shared layout (no front matter)
    <sequence>/NN-name.html.j2 one file per step, ordered by the number prefix
    newsletter/*.html.j2      newsletter issues (not a sequence)
    system/*.html.j2          transactional mail such as the opt-in confirmation

Every email file starts with a front-matter header::

    ---
    key: welcome-history
    subject: Welcome, and where ketamine came from
    preheader: The first of four short emails.
    delay_days: 0
    ---

A sequence step may also carry a ``skip_if`` and an ``only_if`` line, checked when the step falls
due (the whole vocabulary, kept this small on purpose; read and checked in
:mod:`nurture.content.conditions`)::

    skip_if: clicked:consultation      skip it if the person clicked the consultation link,
                                       in any email
    skip_if: clicked:<step-key>        skip it if they clicked a tracked link in that step's email
    only_if: not_clicked:<step-key>    send it only if that step's email was sent to them and
                                       they have not clicked a tracked link in it

``<step-key>`` names an earlier step of the same sequence. A step with a condition is an *extra*
(a reminder, say): not everyone gets it, so it is not one of the series' numbered emails
(``step.total`` and "Part N" count the others) and the step before it does not announce it.
A skipped step is recorded as skipped and never considered again; it does not use up a day. An
extra also goes only to people whose consent wording mentions a reminder (the planner's rule).

**Step keys are the engine's identity for progress.** Progress is stored per
(subscriber, ``seq:<sequence>:<key>``), never by position, so marketing can
insert ``15-...`` between ``10-`` and ``20-`` safely. Renaming a key means "a
new step": everybody who already received the old key would receive the
renamed step again. Change the subject or the body instead.

This module is pure: no database, no settings object, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from nurture.content.conditions import CONDITION_FIELDS, Condition, ConditionError, misplaced, parse_condition

__all__ = [
    "KEY_PATTERN",
    "NOT_SEQUENCES",
    "FrontMatter",
    "Condition",
    "Place",
    "Sequence",
    "Step",
    "TemplateFormatError",
    "describe_email",
    "load_newsletters",
    "load_sequences",
    "parse_front_matter",
    "place_email",
    "scan_templates",
    "strip_front_matter",
]

KEY_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
#: Subdirectories of the templates directory that hold emails but are not sequences.
NOT_SEQUENCES = frozenset({"newsletter", "system"})
EMAIL_SUFFIX = ".html.j2"

_FIELD_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*:(.*)")
_KNOWN_FIELDS = frozenset({"key", "subject", "preheader", "delay_days", "track_opens", *CONDITION_FIELDS})
_STEP_FILE = re.compile(r"(\d+)-.+" + re.escape(EMAIL_SUFFIX))


class LocatedError(ValueError):
    """A mistake at a line of a template file; str() is ``path:line: message`` for editors."""

    def __init__(self, path: Path | str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = Path(path)
        self.line = line
        self.message = message


class TemplateFormatError(LocatedError):
    """A mistake in an email file's front matter or in a sequence's shape."""


@dataclass(frozen=True)
class Step:
    sequence: str
    key: str
    position: int  # 0-based, in file order
    delay_days: int  # days after subscription (confirmation) that the step is due
    subject: str
    preheader: str
    template: str  # relative to the templates dir, e.g. "nurture/10-welcome-history.html.j2"
    track_opens: bool = False
    conditions: tuple[Condition, ...] = ()

    @property
    def is_extra(self) -> bool:
        """A conditional step: not one of the series' numbered emails (see the module docstring)."""
        return bool(self.conditions)


@dataclass(frozen=True)
class Sequence:
    name: str
    steps: tuple[Step, ...]

    @property
    def series(self) -> tuple[Step, ...]:
        """The steps everyone gets (unless they leave): the numbered emails, without the extras."""
        return tuple(step for step in self.steps if not step.is_extra)

    def step(self, key: str) -> Step | None:
        """The step with this key, or None (a step removed from the templates)."""
        for step in self.steps:
            if step.key == key:
                return step
        return None


@dataclass(frozen=True)
class FrontMatter:
    fields: dict[str, str]
    lines: dict[str, int]  # field name -> 1-based line number
    end_line: int  # line of the closing ``---``; 0 when the file has no header
    body: str = field(repr=False)  # the file with the header blanked out, same line count


def parse_front_matter(text: str, path: Path | str) -> FrontMatter:
    """Split ``name: value`` header lines from the Jinja body.

    The header is replaced by blank lines in ``body`` so Jinja's line numbers
    stay those of the file. Values may be wrapped in matching quotes, which
    are removed. Raises TemplateFormatError (path:line: message).
    """
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if not lines or lines[0].rstrip() != "---":
        raise TemplateFormatError(path, 1, "the file must start with a front-matter header between '---' lines")
    fields: dict[str, str] = {}
    where: dict[str, int] = {}
    for index in range(1, len(lines)):
        lineno = index + 1
        raw = lines[index].rstrip("\r")
        stripped = raw.strip()
        if stripped == "---":
            body = "\n" * index + "\n" + "\n".join(lines[index + 1 :])
            return FrontMatter(fields, where, lineno, body)
        if not stripped or stripped.startswith("#"):
            continue
        match = _FIELD_LINE.fullmatch(stripped)
        if not match:
            raise TemplateFormatError(path, lineno, f"expected 'name: value' in the front matter, got {stripped!r}")
        name, value = match.group(1), match.group(2).strip()
        if name not in _KNOWN_FIELDS:
            known = ", ".join(sorted(_KNOWN_FIELDS))
            raise TemplateFormatError(path, lineno, f"unknown front-matter field {name!r} (known: {known})")
        if name in fields:
            raise TemplateFormatError(path, lineno, f"{name!r} is given twice (first on line {where[name]})")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        fields[name] = value
        where[name] = lineno
    raise TemplateFormatError(path, 1, "the front matter is not closed: add a '---' line after the header")


def strip_front_matter(text: str) -> str:
    """The Jinja part of an email file, header lines blanked (lenient: never raises)."""
    try:
        return parse_front_matter(text, "<template>").body
    except TemplateFormatError:
        return text


def _step_from_file(path: Path, rel: str, sequence: str, position: int, *, needs_delay: bool) -> Step:
    front = parse_front_matter(path.read_text(encoding="utf-8"), path)
    fields, where = front.fields, front.lines
    for required in ("key", "subject"):
        if not fields.get(required):
            raise TemplateFormatError(path, 1, f"the front matter has no {required!r} (add a '{required}: ...' line)")
    key = fields["key"]
    if not KEY_PATTERN.fullmatch(key):
        raise TemplateFormatError(
            path, where["key"], f"key {key!r} must be lowercase letters, digits and '-' (at most 64, not starting with '-')"
        )
    if "\n" in fields["subject"]:  # pragma: no cover - lines are split on newlines already
        raise TemplateFormatError(path, where["subject"], "the subject must be one line")
    delay = 0
    if "delay_days" in fields:
        raw = fields["delay_days"]
        if not re.fullmatch(r"\d{1,4}", raw):
            raise TemplateFormatError(path, where["delay_days"], f"delay_days must be a whole number of days (0 or more), got {raw!r}")
        delay = int(raw)
        if not needs_delay and delay != 0:
            raise TemplateFormatError(path, where["delay_days"], "only sequence steps have a delay; remove delay_days")
    elif needs_delay:
        raise TemplateFormatError(path, 1, "the front matter has no 'delay_days' (days after signing up, e.g. 'delay_days: 2')")
    track = fields.get("track_opens", "false")
    if track not in ("true", "false"):
        raise TemplateFormatError(path, where["track_opens"], f"track_opens must be 'true' or 'false', got {track!r}")
    conditions: list[Condition] = []
    for name in (n for n in CONDITION_FIELDS if n in fields):
        try:
            conditions.append(parse_condition(name, fields[name], where[name], is_key=KEY_PATTERN))
        except ConditionError as exc:
            raise TemplateFormatError(path, where[name], str(exc)) from exc
    if conditions and not needs_delay:
        raise TemplateFormatError(path, conditions[0].line, "only sequence steps may have a condition; remove "
                                                            f"{conditions[0].field}")
    return Step(
        sequence=sequence,
        key=key,
        position=position,
        delay_days=delay,
        subject=fields["subject"],
        preheader=fields.get("preheader", ""),
        template=rel,
        track_opens=track == "true",
        conditions=tuple(conditions),
    )


def _email_files(directory: Path) -> list[Path]:
    files = [p for p in directory.iterdir() if p.is_file() and p.name.endswith(EMAIL_SUFFIX) and not p.name.startswith(".")]
    match_number = lambda p: int(m.group(1)) if (m := _STEP_FILE.fullmatch(p.name)) else -1  # noqa: E731
    return sorted(files, key=lambda p: (match_number(p), p.name))


def _scan_directory(templates_dir: Path, directory: Path, *, is_sequence: bool) -> tuple[list[Step], list[TemplateFormatError]]:
    """All steps of one directory, and every problem found instead of stopping at the first."""
    steps: list[Step] = []
    errors: list[TemplateFormatError] = []
    seen: dict[str, Path] = {}
    previous: Step | None = None
    name = directory.name
    for path in _email_files(directory):
        rel = path.relative_to(templates_dir).as_posix()
        if is_sequence and not _STEP_FILE.fullmatch(path.name):
            errors.append(TemplateFormatError(path, 1, "a sequence step's file name must start with a number and '-', e.g. '15-reminder.html.j2'"))
            continue
        try:
            step = _step_from_file(path, rel, name, len(steps), needs_delay=is_sequence)
        except TemplateFormatError as exc:
            errors.append(exc)
            continue
        key_line = _field_line(path, "key")
        if step.key in seen:
            errors.append(TemplateFormatError(path, key_line, f"duplicate key {step.key!r} (also in {seen[step.key].name}); keys must be unique"))
            continue
        if is_sequence and previous is not None and step.delay_days < previous.delay_days:
            errors.append(
                TemplateFormatError(
                    path,
                    _field_line(path, "delay_days"),
                    f"delay_days {step.delay_days} is less than {previous.delay_days} of the step before it "
                    f"({Path(previous.template).name}); delays must not decrease in file order",
                )
            )
            continue
        seen[step.key] = path
        steps.append(step)
        previous = step
    if is_sequence:
        errors.extend(TemplateFormatError(seen[step.key], condition.line, message)
                      for step, condition, message in misplaced(steps))
    return steps, errors


def _field_line(path: Path, name: str) -> int:
    try:
        return parse_front_matter(path.read_text(encoding="utf-8"), path).lines.get(name, 1)
    except TemplateFormatError:
        return 1


def scan_templates(templates_dir: Path) -> tuple[dict[str, Sequence], dict[str, Step], list[TemplateFormatError]]:
    """Sequences, newsletters and every format error, for the validator (never raises on content)."""
    templates_dir = Path(templates_dir)
    sequences: dict[str, Sequence] = {}
    errors: list[TemplateFormatError] = []
    for directory in sorted(p for p in templates_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        if directory.name in NOT_SEQUENCES:
            continue
        if not KEY_PATTERN.fullmatch(directory.name):
            errors.append(TemplateFormatError(directory, 0, "a sequence directory name must be lowercase letters, digits and '-'"))
            continue
        steps, found = _scan_directory(templates_dir, directory, is_sequence=True)
        errors.extend(found)
        if steps:
            sequences[directory.name] = Sequence(directory.name, tuple(steps))
    newsletters: dict[str, Step] = {}
    newsletter_dir = templates_dir / "newsletter"
    if newsletter_dir.is_dir():
        steps, found = _scan_directory(templates_dir, newsletter_dir, is_sequence=False)
        errors.extend(found)
        newsletters = {step.key: step for step in steps}
    return sequences, newsletters, errors


def load_sequences(templates_dir: Path) -> dict[str, Sequence]:
    """Every subdirectory except newsletter/ and system/ is a sequence; raises the first format error."""
    sequences, _, errors = scan_templates(templates_dir)
    sequence_errors = [e for e in errors if e.path.parent.name not in NOT_SEQUENCES]
    if sequence_errors:
        raise sequence_errors[0]
    return sequences


def load_newsletters(templates_dir: Path) -> dict[str, Step]:
    """Newsletter templates by key (delay 0); raises the first format error."""
    _, newsletters, errors = scan_templates(templates_dir)
    newsletter_errors = [e for e in errors if e.path.parent.name == "newsletter"]
    if newsletter_errors:
        raise newsletter_errors[0]
    return newsletters


@dataclass(frozen=True)
class Place:
    """Where one email stands in its group: what templates see as ``step.total`` and ``step.next``."""

    step: Step
    total: int  # the series' numbered steps (extras not counted); 1 for a newsletter or system email
    next: Step | None  # the next numbered step after it; None for the last, an extra's last, a newsletter or a system email
    number: int = 1  # its number in the series; an extra has the number of the numbered step before it

    @classmethod
    def in_sequence(cls, steps: list[Step] | tuple[Step, ...], index: int) -> Place:
        """The place of ``steps[index]``: extras (conditional steps) are neither counted nor
        announced, since not everyone gets them."""
        step = steps[index]
        number = sum(1 for s in steps[: index + 1] if not s.is_extra)
        following = next((s for s in steps[index + 1 :] if not s.is_extra), None)
        return cls(step, sum(1 for s in steps if not s.is_extra), following, number)


def place_email(templates_dir: Path, template: str) -> Place:
    """The Step for any one email file, the number of steps in its group and the step after it.

    For a sequence step this scans its directory (position, total and the next
    step depend on the sibling files); newsletter and system emails are groups
    of one. Raises TemplateFormatError.
    """
    templates_dir = Path(templates_dir)
    rel = Path(template).as_posix()
    path = templates_dir / rel
    parts = rel.split("/")
    if len(parts) == 2 and parts[0] not in NOT_SEQUENCES:
        steps, errors = _scan_directory(templates_dir, path.parent, is_sequence=True)
        for index, step in enumerate(steps):
            if step.template == rel:
                return Place.in_sequence(steps, index)
        for error in errors:
            if error.path == path:
                raise error
        raise TemplateFormatError(path, 1, "not a step of its sequence")
    group = parts[0] if len(parts) > 1 else ""
    return Place(_step_from_file(path, rel, group, 0, needs_delay=False), 1, None)


def describe_email(templates_dir: Path, template: str) -> tuple[Step, int]:
    """The Step for any one email file and the number of steps in its group (see :func:`place_email`)."""
    place = place_email(templates_dir, template)
    return place.step, place.total


def find_email(templates_dir: Path, key: str) -> Step | None:
    """Any email by its front-matter key: a sequence step, a newsletter issue, or a system email
    (system emails are found by file name, e.g. ``confirm``). Raises TemplateFormatError."""
    templates_dir = Path(templates_dir)
    for sequence in load_sequences(templates_dir).values():
        if (step := sequence.step(key)) is not None:
            return step
    if key in (newsletters := load_newsletters(templates_dir)):
        return newsletters[key]
    system = templates_dir / "system" / f"{key}{EMAIL_SUFFIX}"
    if system.is_file():
        return describe_email(templates_dir, f"system/{key}{EMAIL_SUFFIX}")[0]
    return None
