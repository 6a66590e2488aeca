"""MessageKey: the outbox key formats, parsed and written back byte for byte, and what they say."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from nurture.message_key import (ALL_PREFIXES, BROADCAST_PREFIX, CONFIRMATION_PREFIX, MARKETING_PREFIXES,
                                 SEQUENCE_PREFIX, SYSTEM_PREFIX, Kind, MessageKey, kind_of)

# As the templates make them: a sequence is a folder name, a step key matches sequences.KEY_PATTERN.
names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
step_keys = st.from_regex(r"[a-z0-9][a-z0-9-]{0,63}", fullmatch=True)
numbers = st.integers(min_value=0, max_value=2**63 - 1)
keys = st.one_of(
    st.builds(MessageKey.sequence_step, names, step_keys),
    st.builds(MessageKey.broadcast, numbers),
    st.builds(MessageKey.confirmation, numbers),
)
CI = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@CI
@given(keys)
def test_every_key_reads_back_as_itself(key):
    text = str(key)
    assert MessageKey.parse(text) == key
    assert str(MessageKey.parse(text)) == text
    assert kind_of(text) is key.kind
    assert text.startswith(ALL_PREFIXES)


@CI
@given(st.text(max_size=30))
def test_any_text_either_parses_to_the_same_string_or_is_refused(text):
    try:
        key = MessageKey.parse(text)
    except ValueError as exc:
        assert repr(text) in str(exc)
        assert MessageKey.parse_or_none(text) is None
    else:
        assert str(key) == text


def test_the_stored_formats_are_the_ones_in_the_database():
    assert str(MessageKey.sequence_step("nurture", "welcome-history")) == "seq:nurture:welcome-history"
    assert str(MessageKey.broadcast(12)) == "bcast:12"
    assert str(MessageKey.confirmation(3)) == "sys:confirm:3"
    assert MessageKey.sequence_prefix("nurture") == "seq:nurture:"
    assert (SEQUENCE_PREFIX, BROADCAST_PREFIX, SYSTEM_PREFIX, CONFIRMATION_PREFIX) == ("seq:", "bcast:", "sys:",
                                                                                      "sys:confirm:")
    assert MARKETING_PREFIXES == ("seq:", "bcast:") and ALL_PREFIXES == ("seq:", "bcast:", "sys:")


def test_parsed_keys_answer_what_callers_ask():
    step = MessageKey.parse("seq:nurture:risks-side-effects")
    assert (step.kind, step.sequence, step.step, step.is_marketing) == (Kind.SEQUENCE_STEP, "nurture",
                                                                        "risks-side-effects", True)
    issue = MessageKey.parse("bcast:7")
    assert (issue.kind, issue.broadcast_id, issue.is_marketing) == (Kind.BROADCAST, 7, True)
    confirm = MessageKey.parse("sys:confirm:2")
    assert (confirm.kind, confirm.round, confirm.is_marketing) == (Kind.CONFIRMATION, 2, False)
    assert str(step).startswith(MessageKey.sequence_prefix("nurture"))
    assert not str(step).startswith(MessageKey.sequence_prefix("nurt"))


@pytest.mark.parametrize("text", [
    "", "seq:", "seq:nurture", "seq:nurture:", "seq::welcome", "seq:a:b:c", "bcast:", "bcast:x", "bcast:-1",
    "bcast:07", "bcast:+7", "bcast: 7", "bcast:٣", "sys:confirm:", "sys:confirm:x", "sys:welcome:1", "sys:",
    "confirm:1", "SEQ:nurture:welcome", "welcome-history",
])
def test_a_malformed_key_is_a_clear_error(text):
    with pytest.raises(ValueError, match="not an outbox key"):
        MessageKey.parse(text)
    assert MessageKey.parse_or_none(text) is None


def test_keys_cannot_be_built_that_would_not_read_back():
    for bad in (lambda: MessageKey.sequence_step("a:b", "c"), lambda: MessageKey.sequence_step("a", ""),
                lambda: MessageKey.broadcast(-1), lambda: MessageKey.confirmation(True)):
        with pytest.raises(ValueError):
            bad()


def test_kind_by_prefix_never_raises_and_knows_none_of_ours():
    assert kind_of("seq:anything") is Kind.SEQUENCE_STEP
    assert kind_of("bcast:anything") is Kind.BROADCAST
    assert kind_of("sys:confirm:anything") is Kind.CONFIRMATION
    assert kind_of("sys:other") is None and kind_of("") is None
    assert kind_of(MessageKey.broadcast(1)) is Kind.BROADCAST


def test_only_the_confirmation_is_not_marketing():
    assert [kind.is_marketing for kind in Kind] == [False, True, True]


def test_a_template_folder_says_what_kind_of_mail_a_preview_stands_for():
    assert Kind.of_template("system/confirm.html.j2") is Kind.CONFIRMATION
    assert Kind.of_template("newsletter/2026-12-winter.html.j2") is Kind.BROADCAST
    assert Kind.of_template("nurture/10-welcome-history.html.j2") is Kind.SEQUENCE_STEP
    assert Kind.of_template("systemic/10-x.html.j2") is Kind.SEQUENCE_STEP


def test_a_key_is_a_frozen_value():
    key = MessageKey.broadcast(3)
    assert key == MessageKey.parse("bcast:3") and hash(key) == hash(MessageKey.parse("bcast:3"))
    with pytest.raises(AttributeError):
        key.broadcast_id = 4  # type: ignore[misc]
