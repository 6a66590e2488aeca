"""The values a template sees, made safe and readable before Jinja gets them.

Recipient values (first name, the per-person URLs) are cleaned to one line without control
characters, an empty one counts as missing, the first name falls back to "there", and a ``*_url``
that is not http(s) is refused. Campaign values (``clinic.*``) come from the settings or any object
or mapping with the same names. Counts go into sentences as words (the ``words`` filter and
``step.next.when``). The table of every name is at the top of :mod:`nurture.rendering`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nurture.config import DEFAULT_COST_TEXT, DEFAULT_INSURANCE_TEXT

__all__ = [
    "FIRST_NAME_FALLBACK",
    "NUMBER_WORDS",
    "RECIPIENT_KEYS",
    "clean_value",
    "clinic_context",
    "clinic_value",
    "number_words",
    "prepare_recipient",
    "sample_recipient",
    "when_phrase",
]

FIRST_NAME_FALLBACK = "there"
RECIPIENT_KEYS = ("first_name", "unsubscribe_url", "preferences_url", "confirm_url")

# --------------------------------------------------------------------------- recipient values

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def clean_value(value: Any) -> str:
    """One line, no control characters: what a name or URL may hold in any part of an email."""
    return " ".join(_CONTROL.sub(" ", str(value)).split())


def prepare_recipient(recipient: Mapping[str, Any]) -> dict[str, str]:
    """Cleaned recipient values; an empty value counts as missing (an empty URL is a bug upstream)."""
    values = {}
    for key in RECIPIENT_KEYS:
        raw = recipient.get(key)
        value = clean_value(raw) if raw is not None else ""
        if value:
            if key.endswith("_url") and not value.lower().startswith(("https://", "http://")):
                raise ValueError(f"{key} must be an http(s) URL, got {value[:40]!r}")
            values[key] = value
    values.setdefault("first_name", FIRST_NAME_FALLBACK)
    return values


def sample_recipient(base_url: str) -> dict[str, str]:
    """A made-up recipient for previews, the studio and the validator."""
    base = base_url.rstrip("/")
    return {
        "first_name": "Alex",
        "unsubscribe_url": f"{base}/unsubscribe/sample-token",
        # As Links.preferences builds it: the preferences page takes the unsubscribe token.
        "preferences_url": f"{base}/preferences/sample-token",
        "confirm_url": f"{base}/confirm/sample-token",
    }


# --------------------------------------------------------------------------- campaign values

_CLINIC_TEXT = {
    "name": "", "postal_address": "", "phone": "", "website_url": "",
    "cost": DEFAULT_COST_TEXT, "insurance": DEFAULT_INSURANCE_TEXT, "consultation_format": "either",
}


def clinic_context(clinic: Mapping[str, Any] | Any) -> dict[str, Any]:
    """``clinic.*`` for templates: text values as strings, the certification as a real boolean
    (the string "False" would be true in ``{% if %}``)."""
    values: dict[str, Any] = {name: clinic_value(clinic, name, default) for name, default in _CLINIC_TEXT.items()}
    values["esketamine_certified"] = clinic_value(clinic, "esketamine_certified", "false").strip().lower() == "true"
    return values


def clinic_value(clinic: Any, name: str, default: Any) -> Any:
    """``clinic``'s ``name`` (a mapping key or an attribute) as a string, ``default`` when absent or None."""
    if isinstance(clinic, Mapping):
        value = clinic.get(name, default)
    else:
        value = getattr(clinic, name, default)
    return default if value is None else str(value)


# --------------------------------------------------------------------------- counts in words

NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)


def number_words(value: Any) -> str:
    """The ``words`` filter: 4 -> "four"; numbers past twenty (and anything else) as they are."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(NUMBER_WORDS):
        return NUMBER_WORDS[value]
    return str(value)


def when_phrase(days: int) -> str:
    """How far off the next step is, as a sentence says it (it goes at the send hour of that day)."""
    if days <= 0:
        return "soon"  # two steps on one day: the second waits for the next day with room
    if days == 1:
        return "tomorrow"
    if days % 7 == 0:
        weeks = days // 7
        return "in a week" if weeks == 1 else f"in {number_words(weeks)} weeks"
    return f"in {number_words(days)} days"
