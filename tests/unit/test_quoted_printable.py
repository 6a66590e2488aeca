"""Quoted-printable, line by line through a cache, is byte for byte the whole-body encoding."""

from __future__ import annotations

import binascii
import quopri

from hypothesis import given
from hypothesis import strategies as st

from nurture.sending.messages import _qp


def whole_body(text: str) -> bytes:
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(normalised, istext=True).replace(b"\n", b"\r\n")


# Lines of every kind that change an encoding: long ones, trailing blanks, '=', dots, tabs, non-ASCII.
lines = st.text(alphabet=st.sampled_from(list("ab =.\t-é—\u200c<>\"")) | st.characters(exclude_categories=("Cs",)), max_size=300)


@given(st.lists(lines, max_size=12), st.sampled_from(["\n", "\r\n", "\r"]))
def test_line_by_line_is_the_whole_body_encoding(parts, newline):
    text = newline.join(parts)
    assert _qp(text) == whole_body(text)


@given(st.lists(lines, max_size=12))
def test_it_decodes_to_the_text_with_lines_of_at_most_76_octets(parts):
    text = "\n".join(parts)
    encoded = _qp(text)
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    assert quopri.decodestring(encoded).decode("utf-8").replace("\r\n", "\n") == normalised


def test_a_line_seen_before_is_served_from_the_cache():
    from nurture.sending.messages import _qp_line

    _qp("a line every recipient gets\nDear Zoë,")
    before = _qp_line.cache_info().hits
    _qp("a line every recipient gets\nDear Dora,")
    assert _qp_line.cache_info().hits == before + 1
