"""Strict checks of what a person typed into the signup form (or sent as JSON).

Each failure is an InvalidInput naming the field and saying what is wrong, in words a person
understands; the web layer turns it into a 4xx. Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from email_validator import EmailNotValidError, validate_email

MAX_EMAIL = 254
MAX_NAME = 100
SIGNUP_FIELDS = frozenset({"email", "first_name", "timezone", "consent", "consent_version", "website"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0", ""}


class InvalidInput(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Signup:
    email: str
    first_name: str | None
    timezone: str | None  # None: the browser did not say; the clinic's zone is used
    consent_version: str | None
    honeypot_filled: bool


def normalise_email(raw: object) -> str:
    """Validate an address and return its normal form: lower-cased, domain in Unicode NFC.

    Lower-casing the local part is what every large provider does in practice and what people
    expect ("Jane@x" and "jane@x" are one subscriber).
    """
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput("email", "Please enter your email address.")
    if _CONTROL.search(raw):
        raise InvalidInput("email", "The email address contains a line break or control character.")
    text = raw.strip()
    if "=?" in text:
        # An RFC 2047 encoded-word in an address: no real mailbox has one, and mail parsers
        # would decode it into characters the address could not otherwise contain.
        raise InvalidInput("email", "That doesn't look like an email address.")
    if len(text) > MAX_EMAIL:
        raise InvalidInput("email", f"The email address is longer than {MAX_EMAIL} characters.")
    try:
        result = validate_email(text, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise InvalidInput("email", f"That doesn't look like an email address: {exc}") from None
    normalised = unicodedata.normalize("NFC", result.normalized).lower()
    if len(normalised) > MAX_EMAIL:
        raise InvalidInput("email", f"The email address is longer than {MAX_EMAIL} characters.")
    return normalised


def email_hash(normalised_email: str) -> str:
    """The plain SHA-256 of an address: what the keyed hash is computed over, and what versions
    before migration 0003 stored. Never stored now: anyone can compute it from a guessed address."""
    return hashlib.sha256(normalised_email.encode()).hexdigest()


def keyed_email_hash(normalised_email: str, pepper: bytes) -> str:
    """The identity of an address as stored (``Subscriber.email_hash``, kept after erasure so an
    erased address stays suppressed): HMAC-SHA256 under the database's pepper, so a dump of the
    database cannot be checked against guessed addresses.

    It is computed over the plain hash rather than the address, so that migration 0003 could key
    the tombstones of people already erased, whose address is gone but whose plain hash was kept."""
    return hmac.new(pepper, email_hash(normalised_email).encode("ascii"), hashlib.sha256).hexdigest()


def clean_name(raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidInput("first_name", "The first name must be text.")
    if _CONTROL.search(raw):
        raise InvalidInput("first_name", "The first name contains a line break or control character.")
    if any(_unfit_in_name(char) for char in raw):
        raise InvalidInput("first_name", "The first name contains a character that cannot be shown.")
    name = unicodedata.normalize("NFC", raw).strip()
    if len(name) > MAX_NAME:
        raise InvalidInput("first_name", f"The first name is longer than {MAX_NAME} characters.")
    return name or None


# Zero-width joiner and non-joiner are part of how some scripts (and emoji) are written.
_JOINERS = {"\u200c", "\u200d"}


def _unfit_in_name(char: str) -> bool:
    """Unassigned, private-use, surrogate and formatting characters (such as right-to-left
    overrides, which can make a name display as something else) have no place in a greeting."""
    category = unicodedata.category(char)
    return category in ("Cn", "Co", "Cs", "Zl", "Zp") or (category == "Cf" and char not in _JOINERS)


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())  # reads the zone database: once, on first use


def clean_timezone(raw: object) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or raw not in _zones():
        raise InvalidInput("timezone", "The time zone must be an IANA name such as Europe/London.")
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput("timezone", "The time zone must be an IANA name such as Europe/London.") from None
    return raw


def parse_bool(raw: object, field: str) -> bool:
    """Strict booleans: true/false, on/off, yes/no, 1/0; anything else is an error, not False."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise InvalidInput(field, f"{field} must be true or false.")


def parse_signup(data: Mapping[str, object], *, lenient_timezone: bool = False) -> Signup:
    """Check a signup body; raise InvalidInput for the first problem found.

    ``lenient_timezone``: for the browser form, whose time zone comes from a line of JavaScript the
    person cannot see or correct, an unknown zone falls back to the clinic's instead of an error."""
    unknown = sorted(set(data) - SIGNUP_FIELDS)
    if unknown:
        raise InvalidInput(unknown[0], f"Unknown field: {', '.join(unknown)}.")
    honeypot = data.get("website")
    email = normalise_email(data.get("email"))
    first_name = clean_name(data.get("first_name"))
    try:
        timezone = clean_timezone(data.get("timezone"))
    except InvalidInput:
        if not lenient_timezone:
            raise
        timezone = None
    if not parse_bool(data.get("consent", False), "consent"):
        raise InvalidInput("consent", "Please tick the box to agree to receive the emails.")
    version = data.get("consent_version")
    if version is not None and (not isinstance(version, str) or len(version) > 32 or _CONTROL.search(version)):
        raise InvalidInput("consent_version", "consent_version must be a short version string.")
    return Signup(
        email=email,
        first_name=first_name,
        timezone=timezone,
        consent_version=version or None,
        honeypot_filled=bool(honeypot),
    )
