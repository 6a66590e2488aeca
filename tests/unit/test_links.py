"""The public URLs that go into emails (nurture.links): each carries a token its page can read back."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from nurture.links import Links
from nurture.tokens import CONFIRM_MAX_AGE_SECONDS, ExpiredToken, Tokens

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
LINKS = Links("https://mail.clinic.example", Tokens("k"))


def token_of(url: str, page: str) -> str:
    base, _, token = url.rpartition(f"/{page}/")
    assert base == "https://mail.clinic.example" and token and "/" not in token
    return token


def test_a_confirm_link_names_the_person_and_the_round_and_expires():
    url = LINKS.confirm(42, 3, NOW)
    token = token_of(url, "confirm")
    assert LINKS.tokens.read_confirm(token, NOW + timedelta(hours=1)) == (42, 3)
    with pytest.raises(ExpiredToken):
        LINKS.tokens.read_confirm(token, NOW + timedelta(seconds=CONFIRM_MAX_AGE_SECONDS + 1))


def test_an_unsubscribe_link_names_the_person_and_never_expires():
    token = token_of(LINKS.unsubscribe(42), "unsubscribe")
    assert LINKS.tokens.read_unsubscribe(token) == 42
    assert LINKS.unsubscribe(42) != LINKS.unsubscribe(43)


def test_the_preferences_link_takes_the_unsubscribe_token():
    unsubscribe = LINKS.unsubscribe(42)
    preferences = Links.preferences(unsubscribe)
    assert preferences == unsubscribe.replace("/unsubscribe/", "/preferences/")
    assert LINKS.tokens.read_unsubscribe(token_of(preferences, "preferences")) == 42


def test_a_base_url_with_a_path_is_kept():
    links = Links("https://clinic.example/mail", Tokens("k"))
    assert links.unsubscribe(1).startswith("https://clinic.example/mail/unsubscribe/")
    assert Links.preferences(links.unsubscribe(1)).startswith("https://clinic.example/mail/preferences/")
