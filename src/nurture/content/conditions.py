"""The conditions a sequence step's front matter may carry, checked when the step falls due.

The vocabulary is kept this small on purpose (README, "For marketing")::

    skip_if: clicked:consultation      skip it if the person clicked the consultation link, in any email
    skip_if: clicked:<step-key>        skip it if they clicked a tracked link in that step's email
    only_if: not_clicked:<step-key>    send it only if that step's email was sent to them and they
                                       have not clicked a tracked link in it

``<step-key>`` names an earlier step of the same sequence. Whether a condition lets a step go is
decided by the planner (``sending/step_conditions.py``); this module only reads and checks them.
Pure: no database, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["CONDITION_FIELDS", "CONSULTATION", "Condition", "ConditionError", "misplaced", "parse_condition"]

#: The whole vocabulary: each front-matter field and the forms it takes.
CONDITION_FIELDS = {
    "skip_if": "clicked:consultation or clicked:<step-key>",
    "only_if": "not_clicked:<step-key>",
}
CONSULTATION = "consultation"
_VALUE = re.compile(r"(?P<test>[a-z_]+):(?P<target>\S+)")


class ConditionError(ValueError):
    """A condition outside the vocabulary; str() is the message for ``file:line:``."""


@dataclass(frozen=True)
class Condition:
    """When a step is skipped: ``skip_if: clicked:<target>`` or ``only_if: not_clicked:<target>``.
    ``target`` is ``consultation`` (the consultation link, in any email) or an earlier step's key."""

    field: str  # "skip_if" or "only_if"
    test: str  # "clicked" or "not_clicked"
    target: str
    line: int = 0  # where the front matter says it, for the validator

    def __str__(self) -> str:
        return f"{self.field}: {self.test}:{self.target}"

    @property
    def step_key(self) -> str | None:
        """The step this condition looks at, or None for the consultation link."""
        return None if self.target == CONSULTATION and self.test == "clicked" else self.target


def parse_condition(field_name: str, value: str, line: int, *, is_key: re.Pattern[str]) -> Condition:
    """One ``skip_if``/``only_if`` value; ``is_key`` is what a step key looks like. Raises
    ConditionError. Whether its step exists is checked with the whole sequence (:func:`misplaced`)."""
    allowed = f"{field_name} must be {CONDITION_FIELDS[field_name]}"
    match = _VALUE.fullmatch(value)
    if not match:
        raise ConditionError(f"malformed condition {value!r}: {allowed}")
    test, target = match.group("test"), match.group("target")
    if test != ("clicked" if field_name == "skip_if" else "not_clicked"):
        raise ConditionError(f"unknown condition {value!r}: {allowed}")
    if field_name == "only_if" and target == CONSULTATION:
        raise ConditionError(f"unknown condition {value!r}: {allowed} (to leave out people who clicked the "
                             "consultation link, write 'skip_if: clicked:consultation')")
    if target != CONSULTATION and not is_key.fullmatch(target):
        raise ConditionError(f"malformed condition {value!r}: {target!r} is not a step key; {allowed}")
    return Condition(field_name, test, target, line)


class _Keyed(Protocol):
    key: str
    conditions: tuple[Condition, ...]


def misplaced(steps: Iterable[_Keyed]) -> list[tuple[_Keyed, Condition, str]]:
    """(step, condition, message) for each condition whose step key is not an earlier step of
    ``steps`` (one sequence, in order)."""
    steps = list(steps)
    keys = {step.key for step in steps}
    earlier: set[str] = set()
    found = []
    for step in steps:
        for condition in step.conditions:
            target = condition.step_key
            if target is None or target in earlier:
                continue
            if target == step.key:
                why = "refers to this step itself"
            elif target in keys:
                why = "refers to a later step (a condition can only look at an earlier step)"
            else:
                why = f"names no step of this sequence (keys: {', '.join(sorted(keys))})"
            found.append((step, condition, f"the condition '{condition}' {why}"))
        earlier.add(step.key)
    return found
