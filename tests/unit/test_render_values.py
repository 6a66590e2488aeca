"""What templates see: recipient values cleaned, clinic values typed, counts in words."""

from __future__ import annotations

import pytest

from nurture.content.render_values import (
    FIRST_NAME_FALLBACK,
    clean_value,
    clinic_context,
    number_words,
    prepare_recipient,
    sample_recipient,
    when_phrase,
)


def test_a_value_is_one_line_without_control_characters() -> None:
    assert clean_value("Ann\r\nBcc: x@evil.example") == "Ann Bcc: x@evil.example"
    assert clean_value("  Zoë\t\x00 \x85O'Brien  ") == "Zoë O'Brien"
    assert clean_value(42) == "42"


def test_an_empty_first_name_falls_back_and_urls_must_be_http() -> None:
    assert prepare_recipient({"first_name": " \n "}) == {"first_name": FIRST_NAME_FALLBACK}
    assert prepare_recipient({"unsubscribe_url": "", "first_name": None}) == {"first_name": FIRST_NAME_FALLBACK}
    values = prepare_recipient({"first_name": "Ann", "confirm_url": "HTTPS://x.example/c/t", "other": "ignored"})
    assert values == {"first_name": "Ann", "confirm_url": "HTTPS://x.example/c/t"}
    with pytest.raises(ValueError, match="preferences_url must be an http"):
        prepare_recipient({"preferences_url": "data:text/html,hi"})


def test_the_sample_recipient_lives_under_the_base_url() -> None:
    sample = sample_recipient("https://mail.example/")
    assert sample["unsubscribe_url"] == "https://mail.example/unsubscribe/sample-token"
    assert prepare_recipient(sample) == sample  # it passes the renderer's own checks


def test_clinic_values_are_text_and_the_certification_a_real_boolean() -> None:
    class Clinic:
        name = "Harbor"
        phone = None
        esketamine_certified = "False"

    values = clinic_context(Clinic())
    assert values["name"] == "Harbor" and values["phone"] == "" and values["consultation_format"] == "either"
    assert values["esketamine_certified"] is False
    assert clinic_context({"esketamine_certified": True})["esketamine_certified"] is True
    assert clinic_context({})["cost"]  # the default wording, never empty


@pytest.mark.parametrize(("value", "words"), [(0, "zero"), (4, "four"), (20, "twenty"), (21, "21"), (-1, "-1"),
                                              (True, "True"), ("x", "x")])
def test_number_words(value, words) -> None:
    assert number_words(value) == words


@pytest.mark.parametrize(("days", "phrase"), [(0, "soon"), (1, "tomorrow"), (2, "in two days"), (7, "in a week"),
                                              (14, "in two weeks"), (10, "in ten days"), (30, "in 30 days")])
def test_when_phrase(days, phrase) -> None:
    assert when_phrase(days) == phrase
