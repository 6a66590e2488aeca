"""Real returned mail from flufl.bounce's test corpus (tests/fixtures/bounces/flufl, Apache 2.0):
each sample classifies as it did before reports had to be tied to us. A hard failure is hard, a
full mailbox or an expired queue is soft, and mail that is no bounce gives nothing."""

from __future__ import annotations

import email
from pathlib import Path

import pytest

from nurture.feedback.bounce_classify import classify

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "bounces" / "flufl"

# sample -> (kind, the addresses it names); kind "ignored" when it reports nothing
EXPECTED = {
    # hard failures
    "dsn_11.txt": ("hard", {"joem@example.com"}),
    "dsn_12.txt": ("hard", {"userx@example.jp"}),
    "dsn_13.txt": ("hard", {"userx@example.com"}),
    "dsn_14.txt": ("hard", {"userx@example.com.dk"}),
    "exim_01.txt": ("hard", {"userx@its.example.nl"}),
    "postfix_01.txt": ("hard", {"xxxxx@local.ie"}),
    "postfix_02.txt": ("hard", {"yyyyy@digicool.com"}),
    "qmail_03.txt": ("hard", {"userx@example.jp"}),
    "microsoft_01.txt": ("hard", {"userx@example.com"}),
    "simple_15.txt": ("hard", {"userx@example.be"}),
    "yahoo_11.txt": ("hard", {"bad_user@aol.com"}),
    "yahoo_13.txt": ("hard", {"bogus-address@example.net"}),
    "groupwise_01.txt": ("hard", {"userx@example.edu"}),
    "netscape_01.txt": ("hard", {"aaaaa@corel.com", "bbbbb@corel.com"}),
    "smtp32_04.txt": ("hard", {"after_another@example.net", "one_bad_address@example.net"}),
    # an expired queue: soft
    "dsn_02.txt": ("soft", {"zzzzz@example.uk"}),  # 4.4.7, message expired
    "yahoo_01.txt": ("soft", {"userx@example.com"}),  # "in the queue too long"
    # a full mailbox: soft, even when the server says 5xx
    "qmail_06.txt": ("soft", {"ntl@xxx.com"}),
    "simple_07.txt": ("soft", {"userx@example.net"}),
    "yahoo_02.txt": ("soft", {"userx@example.es"}),
    "simple_45.txt": ("soft", {"subscriber@earthlink.net"}),  # 550 ... overquota
    # a delay warning: soft
    "simple_28.txt": ("soft", {"userx@example.com"}),
    "dsn_17.txt": ("soft", {"userx@example.fi"}),  # 4.3.0, still being retried
    # no bounce: a reply quoting an error, a person's message, an auto-reply, a read receipt
    "bounce_01.txt": ("ignored", set()),
    "dumbass_01.txt": ("ignored", set()),
    "qmail_08.txt": ("ignored", set()),
    "simple_38.txt": ("ignored", set()),
}

STATUS = {"dsn_11.txt": "5.1.1", "dsn_02.txt": "4.4.7", "yahoo_01.txt": "4.4.1", "qmail_03.txt": "5.1.1"}


def read(name: str) -> email.message.Message:
    return email.message_from_bytes((CORPUS / name).read_bytes())


def test_the_corpus_is_all_here():
    assert {p.name for p in CORPUS.glob("*.txt")} == set(EXPECTED)
    assert "Apache License" in (CORPUS / "LICENSE").read_text() and "flufl.bounce" in (CORPUS / "README").read_text()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_sample_classifies_as_before(name):
    kind, addresses = EXPECTED[name]
    findings = classify(read(name))
    assert {f.kind for f in findings} == (set() if kind == "ignored" else {kind})
    assert {f.address for f in findings} == addresses
    if name in STATUS:
        assert {f.status for f in findings} == {STATUS[name]}
