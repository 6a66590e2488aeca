from datetime import datetime, timedelta, timezone

import pytest

from nurture.tokens import ExpiredToken, InvalidToken, Tokens

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_confirm_token_round_trips_within_72_hours():
    tokens = Tokens("k")
    token = tokens.confirm(7, 2, NOW)
    assert tokens.read_confirm(token, NOW + timedelta(hours=71, minutes=59)) == (7, 2)


def test_confirm_token_expires_after_72_hours_but_says_whose_it_was():
    tokens = Tokens("k")
    token = tokens.confirm(7, 2, NOW)
    with pytest.raises(ExpiredToken) as info:
        tokens.read_confirm(token, NOW + timedelta(hours=72, seconds=1))
    assert info.value.payload == (7, 2)


def test_unsubscribe_token_never_expires():
    tokens = Tokens("k")
    assert tokens.read_unsubscribe(tokens.unsubscribe(7)) == 7


def test_tokens_are_bound_to_their_purpose_and_key():
    tokens = Tokens("k")
    with pytest.raises(InvalidToken):
        tokens.read_unsubscribe(tokens.confirm(7, 1, NOW))
    with pytest.raises(InvalidToken):
        tokens.read_confirm(tokens.unsubscribe(7), NOW)
    with pytest.raises(InvalidToken):
        Tokens("other").read_unsubscribe(tokens.unsubscribe(7))
    with pytest.raises(InvalidToken):
        tokens.read("click", tokens.sign("open", [1, 2]))


def test_altered_token_is_rejected():
    tokens = Tokens("k")
    token = tokens.unsubscribe(7)
    forged = ("8" if token[0] != "8" else "9") + token[1:]
    with pytest.raises(InvalidToken):
        tokens.read_unsubscribe(forged)
    with pytest.raises(InvalidToken):
        tokens.read_confirm("not-a-token", NOW)
