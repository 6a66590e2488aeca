"""The shapes a setting's value may take, checked strictly: each parser returns the normal form or
raises ValueError with a message that says what shape was expected (config.Settings names the
variable). Domains, addresses, lists, URLs, send windows and rates.
"""

from __future__ import annotations

import ipaddress
import re
from email.utils import getaddresses, quote
from urllib.parse import urlsplit

from nurture.addresses import UnencodableAddress, ascii_domain

__all__ = [
    "checked_domain", "comma_list", "feedback_sender", "ip_or_network", "mailbox", "optional_url",
    "parse_rate", "parse_window", "redact_url",
]


_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def checked_domain(domain: str) -> str | None:
    """The domain as IDNA 2008 A-labels in lower case (as addresses.ascii_domain writes it on the
    wire), if it is one with at least two labels; else None."""
    try:
        domain = ascii_domain(domain.rstrip(".")).lower()
    except UnencodableAddress:
        return None
    labels = domain.split(".")
    return domain if len(labels) >= 2 and all(_DOMAIN_LABEL.match(label) for label in labels) else None


def feedback_sender(item: str) -> str:
    """One trusted feedback-loop sender: a domain with at least two labels, or local@domain."""
    local, at, domain = item.strip().lower().rpartition("@")
    domain = checked_domain(domain)
    if domain is None or (at and (not local or any(c in local for c in ' ,<>"'))):
        raise ValueError(f"{item.strip()!r} is not a domain or an address (give fbl.example.net or "
                         "feedback@fbl.example.net, separated by commas)")
    return f"{local}@{domain}" if at else domain


def ip_or_network(item: str) -> str:
    """One trusted proxy: an IP address or a network, in its normal form."""
    try:
        return str(ipaddress.ip_network(item)) if "/" in item else str(ipaddress.ip_address(item))
    except ValueError:
        raise ValueError(f"{item!r} is not an IP address or network (give 10.0.0.0/8 or 192.0.2.7, "
                         "separated by commas)") from None


def optional_url(value: str | None, schemes: tuple[str, ...], shape: str) -> str | None:
    """An optional URL setting: unset or empty is None, else one of ``schemes`` with a host."""
    if value in (None, ""):
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(shape)
    return value


def comma_list(value: object, parse_item, shape: str) -> tuple[str, ...]:
    """``"a, b"`` (or a list) as a tuple of items, each checked by ``parse_item``; blanks skipped."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError(shape)
    return tuple(parse_item(str(item).strip()) for item in items if str(item).strip())


def parse_window(value: str) -> tuple[int, int]:
    """``"09:00-17:00"`` -> (540, 1020), minutes since local midnight."""
    try:
        start, end = (_minutes(part) for part in value.split("-"))
    except ValueError:
        raise ValueError("must look like 09:00-17:00") from None
    if not start < end:
        raise ValueError("the window must start before it ends, within one day")
    return start, end


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.strip().split(":")
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 24 and 0 <= m < 60 and h * 60 + m <= 1440):
        raise ValueError(hhmm)
    return h * 60 + m


_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


def parse_rate(value: str) -> tuple[int, float]:
    """``"20/minute"`` -> (20, 60.0): at most 20 requests per 60 seconds."""
    try:
        count, period = value.split("/")
        limit, seconds = int(count), _PERIODS[period.strip()]
    except (ValueError, KeyError):
        raise ValueError("must look like 20/minute (second, minute or hour)") from None
    if limit < 1:
        raise ValueError("the count must be at least 1")
    return limit, seconds


_SPECIALS = set('()<>[]:;@\\,."')


def mailbox(value: str) -> str:
    """One address for a From header, ``Name <local@domain>`` or ``local@domain``, checked once at
    start so that no message fails to encode later: exactly one address (an unquoted comma in the
    name would make two), an ASCII local part, the domain as IDNA A-labels. A name that needs quoting
    comes back quoted; a non-ASCII name is kept (messages.py encodes it per RFC 2047)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must be one line, without control characters")
    pairs = getaddresses([value.strip()])
    if len(pairs) != 1 or value.count("<") > 1:
        raise ValueError('must be one address; put a display name that has a comma in double quotes, '
                         'as in "Clinic, Madison" <care@clinic.example>')
    name, address = pairs[0]
    local, at, domain = address.rpartition("@")
    if not (at and local and domain) or any(c in address for c in ' <>"'):
        raise ValueError("must be an address such as Clinic <care@clinic.example>")
    if not local.isascii():
        raise ValueError("the part before @ must be ASCII (mail servers cannot all take more in a From address)")
    domain = checked_domain(domain)
    if domain is None:
        raise ValueError("the part after @ must be a domain such as clinic.example")
    address = f"{local}@{domain}"
    if not name:
        return address
    shown = f'"{quote(name)}"' if _SPECIALS & set(name) else name
    return f"{shown} <{address}>"


def redact_url(value: str) -> str:
    """``smtp://user:pass@host`` -> ``smtp://user:***@host``, for anything shown back to a person.

    Deliberately not a URL parser: a password may hold the very characters (``@ / # ? [``) that
    make one fail or split in the wrong place, so everything up to the last ``@`` counts as
    credentials. A value without ``@`` has none and is returned as it is."""
    credentials, at, rest = value.rpartition("@")
    if not at:
        return value
    scheme, sep, userinfo = credentials.partition("://")
    if not sep:
        scheme, userinfo = "", credentials
    user, colon, _password = userinfo.partition(":")
    hidden = f"{user}:***" if colon else "***"
    return f"{scheme}{sep}{hidden}@{rest}"
