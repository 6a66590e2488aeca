"""What the inbound check (webhook_signing.check) passes and refuses, with the reason it gives."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone

import pytest

from nurture.webhook_signing import BadSignature, check, sign, signature

NOW = datetime(2026, 12, 2, 1, 0, tzinfo=timezone.utc)
T = int(NOW.timestamp())
BODY = b'{"email": "pat@example.com", "id": "bk_1"}'


def _at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def test_the_mac_covers_the_timestamp_and_the_raw_body_as_documented():
    expected = hmac.new(b"s3cret", f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert signature("s3cret", BODY, T) == expected
    assert sign("s3cret", BODY, _at(T)) == f"t={T},v1={expected}"
    assert check("s3cret", BODY, f"t={T},v1={expected}", NOW) == T


def test_one_matching_v1_among_several_is_enough_for_a_secret_being_rotated():
    header = f"t={T},v1={signature('old', BODY, T)},v1={signature('s3cret', BODY, T)}"
    assert check("s3cret", BODY, header, NOW) == T


@pytest.mark.parametrize("header, says", [
    (None, "not signed"),
    ("", "not signed"),
    ("v1=abcd", "must look like"),
    (f"t={T}", "must look like"),
    (f"t=soon,v1={signature('s3cret', BODY, T)}", "not a unix time"),
    (f"t=-5,v1={signature('s3cret', BODY, T)}", "not a unix time"),
    (f"t={T},v1={signature('other', BODY, T)}", "does not match"),
    (f"t={T},v1={signature('s3cret', BODY + b' ', T)}", "does not match"),
    (f"t={T + 1},v1={signature('s3cret', BODY, T)}", "does not match"),  # the timestamp is inside the MAC
    (f"t={T},v1=" + "é" * 64, "does not match"),
    ("t=1," + "v1=a," * 400, "too long"),
])
def test_what_is_refused(header, says):
    with pytest.raises(BadSignature, match=says):
        check("s3cret", BODY, header, NOW)


@pytest.mark.parametrize("offset, ok", [(-300, True), (300, True), (-301, False), (301, False)])
def test_five_minutes_either_way(offset, ok):
    header = sign("s3cret", BODY, _at(T + offset))
    if ok:
        assert check("s3cret", BODY, header, NOW) == T + offset
    else:
        with pytest.raises(BadSignature, match="away from now"):
            check("s3cret", BODY, header, NOW)
    assert check("s3cret", BODY, header, NOW, timedelta(minutes=10))
