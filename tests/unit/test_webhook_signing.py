"""The webhook signature: a known vector, a round trip, and what must be refused."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from nurture.webhook_signing import sign, signature, verify, why_invalid

SECRET = "whsec_test"
BODY = b'{"id":"evt_1"}'
AT = datetime(2026, 1, 1, tzinfo=timezone.utc)  # unix 1767225600


def test_a_known_vector():
    # printf '%s' '1767225600.{"id":"evt_1"}' | openssl dgst -sha256 -hmac whsec_test
    expected = "45b40331de0325606dc5400202ade162460fbe48daf9401adfdcd0d7b4f35470"
    assert signature(SECRET, BODY, 1767225600) == expected
    assert sign(SECRET, BODY, AT) == f"t=1767225600,v1={expected}"


def test_what_is_signed_verifies_within_the_window():
    header = sign(SECRET, BODY, AT)
    assert verify(SECRET, BODY, header, AT)
    assert verify(SECRET, BODY, header, AT + timedelta(minutes=4, seconds=59))
    assert verify(SECRET, BODY, header, AT - timedelta(minutes=4))  # a receiver's clock a little behind


def test_a_changed_body_secret_or_timestamp_is_refused():
    header = sign(SECRET, BODY, AT)
    assert "does not match" in why_invalid(SECRET, BODY + b" ", header, AT)
    assert "does not match" in why_invalid("whsec_other", BODY, header, AT)
    moved = header.replace("t=1767225600", "t=1767225601")  # a fresh timestamp on an old signature
    assert "does not match" in why_invalid(SECRET, BODY, moved, AT)


def test_a_stale_signature_is_refused_even_when_it_matches():
    header = sign(SECRET, BODY, AT)
    assert "away from now" in why_invalid(SECRET, BODY, header, AT + timedelta(minutes=5, seconds=1))
    assert verify(SECRET, BODY, header, AT + timedelta(minutes=30), window=timedelta(hours=1))


def test_missing_or_malformed_headers_are_refused_without_raising():
    for header in (None, "", "v1=abc", "t=abc,v1=abc", "t=1767225600", "garbage", "t=99999999999999999999,v1=00"):
        assert not verify(SECRET, BODY, header, AT), header
    assert "not signed" in why_invalid(SECRET, BODY, None, AT)


def test_any_one_of_several_signatures_may_match():
    good = sign(SECRET, BODY, AT).split(",")[1]
    assert verify(SECRET, BODY, f"t=1767225600, v1={'0' * 64}, {good}", AT)


def test_the_readme_example_verifies_what_nurture_signs():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Webhooks"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - our own README's example
    now = datetime.now(timezone.utc)
    assert scope["verify"](SECRET, BODY, sign(SECRET, BODY, now))
    assert not scope["verify"](SECRET, BODY + b"x", sign(SECRET, BODY, now))
    assert not scope["verify"](SECRET, BODY, sign(SECRET, BODY, now - timedelta(minutes=6)))
