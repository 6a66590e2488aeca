"""A likely typo in an address's domain (``gmail.con``), and the address the person probably meant.

Only a suggestion for the signup form, worked out offline: a short list of the mail domains most
people use, and the edit distance (with swapped neighbours as one edit) from what was typed. A
domain on the list, or one far from all of them, gets no suggestion; the person can always keep
what they typed.
"""

from __future__ import annotations

from functools import lru_cache

COMMON_DOMAINS = (
    "gmail.com", "googlemail.com", "yahoo.com", "ymail.com", "hotmail.com", "outlook.com", "live.com",
    "msn.com", "icloud.com", "me.com", "mac.com", "aol.com", "comcast.net", "att.net", "sbcglobal.net",
    "verizon.net", "bellsouth.net", "cox.net", "charter.net", "protonmail.com", "proton.me", "gmx.com",
    "mail.com", "yahoo.co.uk", "hotmail.co.uk", "btinternet.com",
)
_KNOWN = frozenset(COMMON_DOMAINS)


def suggest(email: str) -> str | None:
    """The address with its domain corrected, when the domain is one or two edits away from exactly
    one common domain (one edit for short domains, where two would match too much); else None."""
    local, at, domain = email.rpartition("@")
    closest = _closest(domain.lower()) if at else None
    return f"{local}@{closest}" if closest else None


@lru_cache(maxsize=1024)
def _closest(domain: str) -> str | None:
    if domain in _KNOWN:
        return None
    allowed = 1 if len(domain) <= 8 else 2
    # The distance is at least the difference in length: most domains (a clinic's, a company's)
    # are ruled out without the quadratic comparison, which runs on the event loop.
    near = sorted((_distance(domain, known), known) for known in COMMON_DOMAINS
                  if abs(len(known) - len(domain)) <= allowed)
    near = [(distance, known) for distance, known in near if distance <= allowed]
    if not near or (len(near) > 1 and near[1][0] == near[0][0]):
        return None
    return near[0][1]


def _distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
    neighbouring letters each cost one."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, char_b in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]
