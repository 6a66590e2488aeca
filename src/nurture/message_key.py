"""The key of an outbox row, and what it says about the message: one place that knows the formats.

Every row of the outbox is keyed, unique per subscriber, by one of three strings (stored as they
are, byte for byte, so changing a format would resend or lose mail):

- ``seq:<sequence>:<step key>``  a step of a sequence (marketing)
- ``bcast:<broadcast id>``       a newsletter issue (marketing)
- ``sys:confirm:<round>``        the confirmation email, one per confirmation round (transactional)

:class:`MessageKey` parses and formats them and answers what callers ask (the kind, whether the
mail is marketing, the step, the issue, the round); the ``*_PREFIX`` constants and
:func:`MessageKey.sequence_prefix` are the stored prefixes queries filter on, so no other module
spells a key.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

SEQUENCE_PREFIX = "seq:"
BROADCAST_PREFIX = "bcast:"
SYSTEM_PREFIX = "sys:"  # every transactional message: the signup's fast pass sends only these
CONFIRMATION_PREFIX = "sys:confirm:"
MARKETING_PREFIXES = (SEQUENCE_PREFIX, BROADCAST_PREFIX)
ALL_PREFIXES = (SEQUENCE_PREFIX, BROADCAST_PREFIX, SYSTEM_PREFIX)  # everything a subscriber may be sent


class Kind(enum.Enum):
    """What a message is; the one answer to "is this marketing mail?"."""

    CONFIRMATION = "confirmation"
    SEQUENCE_STEP = "sequence step"
    BROADCAST = "broadcast"

    @property
    def is_marketing(self) -> bool:
        """Marketing mail carries the unsubscribe link and List-Unsubscribe, goes in a marketing
        stream and may be tracked; the confirmation does none of that (there is no consent yet)."""
        return self is not Kind.CONFIRMATION

    @classmethod
    def of_template(cls, template: str) -> Kind:
        """The kind of mail a template file makes, by its folder (``system/``, ``newsletter/`` or a
        sequence's): what a preview, which has no outbox row, stands in for."""
        folder = template.partition("/")[0]
        if folder == "system":
            return cls.CONFIRMATION
        return cls.BROADCAST if folder == "newsletter" else cls.SEQUENCE_STEP


def kind_of(key: str | MessageKey) -> Kind | None:
    """The kind of a stored key by its prefix alone, None for none of ours: cheap, and never raises,
    for the loops over many rows (a claim, a plan) where one odd row must not stop the others."""
    if isinstance(key, MessageKey):
        return key.kind
    if key.startswith(SEQUENCE_PREFIX):
        return Kind.SEQUENCE_STEP
    if key.startswith(BROADCAST_PREFIX):
        return Kind.BROADCAST
    if key.startswith(CONFIRMATION_PREFIX):
        return Kind.CONFIRMATION
    return None


@dataclass(frozen=True)
class MessageKey:
    """One outbox key, parsed. Build one with :meth:`sequence_step`, :meth:`broadcast`,
    :meth:`confirmation` or :meth:`parse`; ``str()`` is the stored form."""

    kind: Kind
    sequence: str | None = None  # sequence steps: the sequence's name (its folder)
    step: str | None = None  # sequence steps: the step's key (front matter)
    broadcast_id: int | None = None  # broadcasts
    round: int | None = None  # confirmations: the subscriber's confirmation round

    @classmethod
    def sequence_step(cls, sequence: str, step: str) -> MessageKey:
        for part, value in (("sequence", sequence), ("step key", step)):
            if not value or ":" in value:
                raise ValueError(f"outbox key: {part} {value!r} is empty or holds a colon")
        return cls(Kind.SEQUENCE_STEP, sequence=sequence, step=step)

    @classmethod
    def broadcast(cls, broadcast_id: int) -> MessageKey:
        return cls(Kind.BROADCAST, broadcast_id=_natural(broadcast_id, "broadcast id"))

    @classmethod
    def confirmation(cls, round_: int) -> MessageKey:
        return cls(Kind.CONFIRMATION, round=_natural(round_, "confirmation round"))

    @classmethod
    def parse(cls, text: str) -> MessageKey:
        """The key stored as ``text``; ValueError (naming it) when it is not one of ours."""
        try:
            if text.startswith(SEQUENCE_PREFIX):
                sequence, colon, step = text[len(SEQUENCE_PREFIX):].partition(":")
                if colon:
                    return cls.sequence_step(sequence, step)
            elif text.startswith(BROADCAST_PREFIX):
                return cls.broadcast(_number(text[len(BROADCAST_PREFIX):]))
            elif text.startswith(CONFIRMATION_PREFIX):
                return cls.confirmation(_number(text[len(CONFIRMATION_PREFIX):]))
        except ValueError:
            pass
        raise ValueError(f"not an outbox key: {text!r} (expected seq:<sequence>:<step>, bcast:<id> "
                         "or sys:confirm:<round>)")

    @classmethod
    def parse_or_none(cls, text: str) -> MessageKey | None:
        """The key stored as ``text``, or None when it is not one of ours (for reading many rows)."""
        try:
            return cls.parse(text)
        except ValueError:
            return None

    @staticmethod
    def sequence_prefix(sequence: str) -> str:
        """The stored prefix of every step of one sequence (``seq:nurture:``)."""
        return f"{SEQUENCE_PREFIX}{sequence}:"

    @property
    def is_marketing(self) -> bool:
        return self.kind.is_marketing

    def __str__(self) -> str:
        if self.kind is Kind.SEQUENCE_STEP:
            return f"{SEQUENCE_PREFIX}{self.sequence}:{self.step}"
        if self.kind is Kind.BROADCAST:
            return f"{BROADCAST_PREFIX}{self.broadcast_id}"
        return f"{CONFIRMATION_PREFIX}{self.round}"


def _number(text: str) -> int:
    # Digits only, in their one canonical spelling, so str(parse(text)) == text: "07", "+7" and
    # " 7" (which int() accepts) are not keys we wrote.
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise ValueError(text)
    return int(text)


def _natural(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"outbox key: {what} must be a whole number, not {value!r}")
    return value
