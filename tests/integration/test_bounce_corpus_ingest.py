"""Real returned mail from flufl.bounce's corpus (tests/fixtures/bounces/flufl, Apache 2.0),
ingested for a subscriber we really mailed: a hard failure suppresses when the returned headers
carry the Message-ID of our email, and the very same report with the id it came with (someone
else's) suppresses nobody. A full mailbox or an expired queue is one soft bounce, no more."""

from __future__ import annotations

import email
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from nurture.feedback.bounce_classify import classify
from nurture.feedback.bounces import ingest
from nurture.models import Status, Subscriber

from factories import confirmed

UTC = timezone.utc
CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "bounces" / "flufl"
T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)

# Samples whose returned headers carry the original Message-ID, which we swap for ours.
HARD = ["dsn_11.txt", "dsn_13.txt", "dsn_14.txt", "exim_01.txt", "postfix_02.txt", "yahoo_13.txt"]
SOFT = ["dsn_02.txt", "dsn_17.txt"]  # an expired queue (4.4.7); a delay with retries going on


def sample(name: str) -> tuple[bytes, str, str]:
    """The sample's bytes, the address it reports and the original Message-ID it carries."""
    raw = (CORPUS / name).read_bytes()
    [finding] = classify(email.message_from_bytes(raw))
    assert finding.message_id, name
    return raw, finding.address, finding.message_id


def as_ours(raw: bytes, theirs: str, ours: str) -> bytes:
    """The same report about our email: its original id replaced by ours, and a new id of its
    own so that ingest does not take it for the report it read before."""
    raw = raw.replace(theirs.encode(), ours.encode())
    head, blank, body = raw.partition(b"\n\n")
    head = re.sub(rb"(?im)^Message-ID:[^\n]*(?:\n[ \t][^\n]*)*", f"Message-ID: <again.{ours[1:]}".encode(), head,
                  count=1)
    return head + blank + body


def run_ingest(runtime, messages, now):
    s = runtime.settings
    return ingest(runtime.sessions, messages, now=now, secret=s.secret, from_header=s.mail_from,
                  trusted_senders=s.trusted_feedback_senders)


def statuses(runtime) -> dict[str, Status]:
    with runtime.sessions() as session:
        return dict(session.execute(select(Subscriber.email, Subscriber.status)).all())


@pytest.mark.parametrize("names", [HARD + SOFT])
def test_real_returned_mail_counts_only_with_our_message_id(runtime, memory_transport, names):
    samples = {name: sample(name) for name in names}
    for _raw, address, _theirs in samples.values():
        confirmed(runtime.sessions, address, T0 - timedelta(minutes=1))
    runtime.sender().run_pass(T0)
    ours = {to: email.message_from_bytes(data)["Message-ID"] for _f, to, data in memory_transport.sent}
    assert set(ours) == {address for _r, address, _t in samples.values()}
    at = T0 + timedelta(hours=2)

    as_they_came = run_ingest(runtime, [raw for raw, _a, _t in samples.values()], at)
    assert (as_they_came.hard, as_they_came.soft, as_they_came.suppressed) == (0, 0, 0)
    assert as_they_came.unverified == len(names)
    assert set(statuses(runtime).values()) == {Status.confirmed}

    tied = run_ingest(runtime, [as_ours(raw, theirs, ours[address]) for raw, address, theirs in samples.values()], at)
    assert (tied.hard, tied.soft, tied.suppressed, tied.unverified, tied.duplicates) == (
        len(HARD), len(SOFT), len(HARD), 0, 0)
    assert statuses(runtime) == {**{samples[n][1]: Status.bounced for n in HARD},
                                 **{samples[n][1]: Status.confirmed for n in SOFT}}
