"""Suggestions for a mistyped mail domain: offered for near misses of common domains, never otherwise."""

from __future__ import annotations

import pytest

from nurture.people.domain_typos import COMMON_DOMAINS, _distance, suggest


@pytest.mark.parametrize("typed, meant", [
    ("ana@gmail.con", "ana@gmail.com"),  # a wrong letter in the ending
    ("ana@gmial.com", "ana@gmail.com"),  # two letters swapped
    ("ana@gmail.co", "ana@gmail.com"),  # one left out
    ("ana@hotmial.com", "ana@hotmail.com"),
    ("ana@yahooo.com", "ana@yahoo.com"),  # one too many
    ("ana@outlok.com", "ana@outlook.com"),
    ("ana@icloud.con", "ana@icloud.com"),
    ("ana.b+tag@GMAIL.CON", "ana.b+tag@gmail.com"),  # the local part is kept exactly
])
def test_a_near_miss_of_a_common_domain_gets_a_suggestion(typed, meant):
    assert suggest(typed) == meant


@pytest.mark.parametrize("typed", [
    "ana@gmail.com", "ana@me.com",  # on the list
    "ana@clinic.example", "ana@uni-heidelberg.de", "ana@gmx.de", "ana@comcast.com",  # far from all of them
    "ana@ail.com",  # one edit from both aol.com and mail.com: no guess
    "not-an-address",
])
def test_no_suggestion_for_known_far_or_ambiguous_domains(typed):
    assert suggest(typed) is None


def test_a_common_domain_is_never_corrected_into_another():
    # Some are one edit apart (gmail.com, ymail.com): what is on the list is kept as typed.
    assert [suggest(f"ana@{domain}") for domain in COMMON_DOMAINS] == [None] * len(COMMON_DOMAINS)
    assert suggest("ana@xmail.com") is None  # one edit from both gmail.com and ymail.com


def test_distance_counts_a_swap_of_neighbours_as_one_edit():
    pairs = [("gmail", "gmial"), ("abc", "abc"), ("", "abc"), ("kitten", "sitting")]
    assert [_distance(a, b) for a, b in pairs] == [1, 0, 3, 3]
