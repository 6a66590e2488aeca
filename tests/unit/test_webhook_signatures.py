"""The webhook signature (t=<unix>,v1=<hex> over "<t>.<body>"): what passes and what does not."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone

import pytest

from nurture.webhook_signatures import BadSignature, sign, signature_header, verify

NOW = datetime(2026, 12, 2, 1, 0, tzinfo=timezone.utc)
T = int(NOW.timestamp())
BODY = b'{"email": "pat@example.com", "id": "bk_1"}'


def test_the_mac_covers_the_timestamp_and_the_raw_body_as_documented():
    expected = hmac.new(b"s3cret", f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign("s3cret", T, BODY) == expected
    assert signature_header("s3cret", T, BODY) == f"t={T},v1={expected}"
    assert verify(f"t={T},v1={expected}", BODY, secret="s3cret", now=NOW) == T


def test_one_matching_v1_among_several_is_enough_for_a_secret_being_rotated():
    header = f"t={T},v1={sign('old', T, BODY)},v1={sign('s3cret', T, BODY)}"
    assert verify(header, BODY, secret="s3cret", now=NOW) == T


@pytest.mark.parametrize("header, says", [
    (None, "not signed"),
    ("", "not signed"),
    ("v1=abcd", "must look like"),
    (f"t={T}", "must look like"),
    (f"t=soon,v1={sign('s3cret', T, BODY)}", "not a unix time"),
    (f"t=-5,v1={sign('s3cret', T, BODY)}", "not a unix time"),
    (f"t={T},v1={sign('other', T, BODY)}", "does not match"),
    (f"t={T},v1={sign('s3cret', T, BODY + b' ')}", "does not match"),
    (f"t={T + 1},v1={sign('s3cret', T, BODY)}", "does not match"),  # the timestamp is inside the MAC
    (f"t={T},v1=" + "é" * 64, "does not match"),
    ("t=1," + "v1=a," * 400, "too long"),
])
def test_what_is_refused(header, says):
    with pytest.raises(BadSignature, match=says):
        verify(header, BODY, secret="s3cret", now=NOW)


@pytest.mark.parametrize("offset, ok", [(-300, True), (300, True), (-301, False), (301, False)])
def test_five_minutes_either_way(offset, ok):
    header = signature_header("s3cret", T + offset, BODY)
    if ok:
        assert verify(header, BODY, secret="s3cret", now=NOW) == T + offset
    else:
        with pytest.raises(BadSignature, match="away from now"):
            verify(header, BODY, secret="s3cret", now=NOW)
    assert verify(header, BODY, secret="s3cret", now=NOW, tolerance=timedelta(minutes=10))
