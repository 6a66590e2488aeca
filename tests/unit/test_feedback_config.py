"""NURTURE_TRUSTED_FEEDBACK_SENDERS: comma-separated domains or addresses, normalised; anything
else stops the program with one line naming the variable."""

from __future__ import annotations

import pytest

from nurture.config import ConfigError, load_settings

BASE = {"NURTURE_SECRET_KEY": "k"}


def senders(value: str) -> tuple[str, ...]:
    return load_settings({**BASE, "NURTURE_TRUSTED_FEEDBACK_SENDERS": value}).trusted_feedback_senders


def test_empty_by_default():
    assert load_settings(BASE).trusted_feedback_senders == ()
    assert senders("") == () and senders(" , ") == ()


def test_domains_and_addresses_lower_cased_and_idna():
    assert senders(" FBL.example.net, Feedback@ARF.Mail.Yahoo.com ,bücher.example.") == (
        "fbl.example.net", "feedback@arf.mail.yahoo.com", "xn--bcher-kva.example")


@pytest.mark.parametrize("value", ["localhost", "fbl..example.net", "@fbl.example.net", "-x.example.net",
                                   "a b@example.net", "feedback@", "https://fbl.example.net", "x_y.example.net"])
def test_anything_else_is_one_line_naming_the_variable(value):
    with pytest.raises(ConfigError) as caught:
        senders(value)
    message = str(caught.value)
    assert message.startswith("NURTURE_TRUSTED_FEEDBACK_SENDERS: ") and "\n" not in message
