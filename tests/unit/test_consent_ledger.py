"""Consent-ledger rows: the wording agreed to, by version, and who asked."""

from __future__ import annotations

from datetime import datetime, timezone

from nurture.people.consent_ledger import CONSENT_VERSION, CONSENT_WORDINGS, RequestInfo, consent_values

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
REQUEST = RequestInfo(ip="192.0.2.1", user_agent="Mozilla/5.0 " + "x" * 600, source="signup-form")


def test_a_consent_given_carries_the_wording_of_its_version() -> None:
    row = consent_values(7, "signup", T0, REQUEST, CONSENT_VERSION)
    assert row["wording"] == CONSENT_WORDINGS[CONSENT_VERSION] and row["wording_version"] == CONSENT_VERSION
    assert (row["subscriber_id"], row["kind"], row["scope"], row["created_at"]) == (7, "signup", "all", T0)
    assert (row["ip"], row["source"]) == ("192.0.2.1", "signup-form")
    assert len(row["user_agent"]) == 512


def test_an_unknown_version_of_a_consent_given_is_the_current_one() -> None:
    for kind in ("signup", "confirm", "resume"):
        assert consent_values(1, kind, T0, REQUEST, "1999-01-01")["wording_version"] == CONSENT_VERSION


def test_a_withdrawal_has_no_wording() -> None:
    row = consent_values(1, "withdraw", T0, RequestInfo(None, None, "complaint"), None, scope="newsletter")
    assert (row["wording"], row["wording_version"], row["scope"], row["user_agent"]) == (None, None, "newsletter", None)


def test_published_wordings_are_never_empty() -> None:
    assert CONSENT_VERSION in CONSENT_WORDINGS and all(text.strip() for text in CONSENT_WORDINGS.values())
