"""The whole journey through a real MTA: Debian's Postfix on loopback (tests/postfix_mta.py).

People sign up through the web app, `nurture send-due` runs as a real process on a real SQLite
file and hands the mail to Postfix over STARTTLS, Postfix delivers it into a Maildir, and the
test follows the confirmation link found in the delivered email, then runs one pass on each day
of the sequence. Everything asserted is read back from what Postfix delivered (and the database).

The plain addresses tell whether the tier works; the internationalised ones (an IDN domain, a
UTF-8 local part: Postfix offers SMTPUTF8) have tests of their own, written for the target
behaviour: delivered, envelope domain in A-label form, SMTPUTF8 for a non-ASCII local part.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nurture.content.sequences import load_sequences
from nurture.db import make_engine, session_factory
from nurture.migrate import upgrade
from nurture.models import Event, OutboxMessage, OutboxState, Status, Subscriber
from nurture.runtime import Runtime
from nurture.web import create_app

from conftest import SECRET, TEMPLATES, make_settings
from factories import confirmed
from postfix_mta import REJECTED, Delivered

pytestmark = pytest.mark.mta

CLINIC = ZoneInfo("America/Chicago")  # the default zone: the signups below do not name one
SIGNUP_DAY = date(2026, 12, 1)  # no daylight-saving change in the next nine days
PLAIN = ["ann@example.com", "bob@example.com", "cat@example.org"]
COMPANION = "hal@example.com"  # a plain address signed up alongside the international ones
IDN = "dora@bücher.example.com"
IDN_ON_THE_WIRE = "dora@xn--bcher-kva.example.com"
UTF8_LOCAL = "zoë@example.com"
BASE_URL = "http://127.0.0.1:8000"
STEPS = load_sequences(TEMPLATES)["nurture"].steps
CONFIRM_SUBJECT = "Please confirm your subscription"
EVERY_SUBJECT = [CONFIRM_SUBJECT] + [step.subject for step in STEPS]


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=CLINIC).astimezone(timezone.utc)


def nurture(workdir: Path, database_url: str, mta, *args: str) -> subprocess.Popen:
    """`python -m nurture ...` as an operator runs it, mailing through the private Postfix."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_") and k != "SSL_CERT_DIR"}
    environ |= {"NURTURE_DATABASE_URL": database_url, "NURTURE_SMTP_URL": mta.url, "NURTURE_SECRET_KEY": SECRET,
                "NURTURE_TEMPLATES_DIR": str(TEMPLATES), "NURTURE_BASE_URL": BASE_URL,
                "NURTURE_SMTP_POOL_SIZE": "2", "COLUMNS": "200",
                # Postfix's certificate is signed by the CA the start script made: trust only it.
                "SSL_CERT_FILE": str(mta.ca_file)}
    return subprocess.Popen([sys.executable, "-m", "nurture", *args], cwd=workdir, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@dataclass
class Pass:
    label: str
    now: datetime
    done: subprocess.CompletedProcess
    arrivals: list[Delivered] = field(default_factory=list)

    def to(self, recipient: str) -> list[Delivered]:
        return [d for d in self.arrivals if d.recipient == recipient]


@dataclass
class Journey:
    """One database and the people signed up in it; ``wire`` maps each address to the envelope
    recipient Postfix should see (the domain in A-label form)."""

    workdir: Path
    wire: dict[str, str]
    passes: list[Pass] = field(default_factory=list)
    confirm_answers: dict[str, int] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.workdir / 'subscribers.db'}"

    def delivered(self) -> list[Delivered]:
        return [d for p in self.passes for d in p.arrivals]

    def to(self, recipient: str) -> list[Delivered]:
        return [d for d in self.delivered() if d.recipient == recipient]

    def rows(self) -> list[tuple[str, OutboxMessage]]:
        engine = make_engine(self.database_url)
        with session_factory(engine)() as session:
            result = session.execute(select(Subscriber.email, OutboxMessage)
                                     .join(OutboxMessage, OutboxMessage.subscriber_id == Subscriber.id)
                                     .order_by(OutboxMessage.id)).all()
            session.expunge_all()
        engine.dispose()
        return [tuple(r) for r in result]


def confirm_link(delivered: Delivered) -> str:
    text = delivered.message.get_body(("plain",)).get_content()
    match = re.search(re.escape(BASE_URL) + r"(/confirm/[A-Za-z0-9._-]+)", text)
    assert match, f"no confirm link in the text part:\n{text}"
    return match.group(1)


@pytest.fixture(scope="module")
def journeys(postfix_mta, tmp_path_factory) -> dict[str, Journey]:
    """Signup, confirmation by the delivered link, and a `send-due` pass on each day of the
    sequence (then one more, which must send nothing), in two databases side by side: the plain
    addresses alone, and the international ones with a plain companion, so whatever the
    international ones do cannot blur what the plain ones show."""
    journeys = {
        "plain": Journey(tmp_path_factory.mktemp("plain"), {a: a for a in PLAIN}),
        "international": Journey(tmp_path_factory.mktemp("international"),
                                 {COMPANION: COMPANION, IDN: IDN_ON_THE_WIRE, UTF8_LOCAL: UTF8_LOCAL}),
    }
    owner = {wire: j for j in journeys.values() for wire in j.wire.values()}
    inbox = postfix_mta.inbox()

    def run_pass(label: str, now: datetime) -> None:
        # Both databases' passes run at once, as the separate processes they are.
        processes = {name: nurture(j.workdir, j.database_url, postfix_mta, "send-due", "--now", now.isoformat())
                     for name, j in journeys.items()}
        for name, process in processes.items():
            journeys[name].passes.append(Pass(label, now, finished(process)))
        postfix_mta.settle()
        for d in inbox.messages():
            inbox.seen.add(d.path.name)
            assert d.recipient in owner, f"mail for a stranger: {d.recipient}"
            owner[d.recipient].passes[-1].arrivals.append(d)

    for j in journeys.values():
        upgrade(j.database_url)
    clock = [local(SIGNUP_DAY, 9)]
    clients = {}
    for name, j in journeys.items():
        runtime = Runtime(make_settings(j.workdir, j.database_url))
        clients[name] = (runtime, TestClient(create_app(runtime, dispatch=False, clock=lambda: clock[0])))
        for address in j.wire:
            answer = clients[name][1].post("/subscribe", json={"email": address, "consent": True})
            assert answer.status_code == 202, (address, answer.text)
    run_pass("confirmations", local(SIGNUP_DAY, 9, 1))
    clock[0] = local(SIGNUP_DAY, 9, 5)
    for name, j in journeys.items():
        runtime, client = clients[name]
        for delivered in j.passes[-1].arrivals:
            answer = client.post(confirm_link(delivered), headers={"Accept": "application/json"})
            j.confirm_answers[delivered.recipient] = answer.status_code
        runtime.close()
    for step in STEPS:
        # Step with delay d: the local day (confirmation day + d), from 09:00; delay 0 goes at once.
        at = local(SIGNUP_DAY, 9, 10) if step.delay_days == 0 else local(SIGNUP_DAY + timedelta(step.delay_days), 9)
        run_pass(step.key, at)
    run_pass("after the last step", local(SIGNUP_DAY + timedelta(STEPS[-1].delay_days + 1), 9))
    return journeys


@pytest.fixture(scope="module")
def plain(journeys) -> Journey:
    return journeys["plain"]


@pytest.fixture(scope="module")
def international(journeys) -> Journey:
    return journeys["international"]


def all_delivered(journeys) -> list[Delivered]:
    return [d for j in journeys.values() for d in j.delivered()]


def assert_passes_clean(journey: Journey) -> None:
    for p in journey.passes:
        assert p.done.returncode == 0, (p.label, p.done.stderr)
        assert "Traceback" not in p.done.stderr + p.done.stdout, (p.label, p.done.stderr)
        assert "sent " in p.done.stdout, (p.label, p.done.stdout)


def assert_whole_journey(journey: Journey, address: str) -> None:
    """The confirmation and each step exactly once, each in its own pass (its own local day)."""
    wire = journey.wire[address]
    assert journey.confirm_answers.get(wire) == 200
    for p, subject in zip(journey.passes, [*EVERY_SUBJECT, None], strict=True):
        got = [str(d.message["Subject"]) for d in p.to(wire)]
        assert got == ([subject] if subject else []), (address, p.label, p.now)
    mine = journey.to(wire)
    assert len(mine) == len(EVERY_SUBJECT)
    assert len({str(d.message["Message-ID"]) for d in mine}) == len(mine)  # no copies
    states = [row.state for email, row in journey.rows() if email == address]
    assert states == [OutboxState.sent] * len(EVERY_SUBJECT), (address, states)


def test_every_send_due_pass_exits_0_without_a_traceback(plain):
    assert_passes_clean(plain)


@pytest.mark.parametrize("address", PLAIN)
def test_a_plain_address_gets_the_confirmation_and_each_step_once_on_its_day(plain, address):
    assert_whole_journey(plain, address)
    assert all(d.message["To"].addresses[0].addr_spec == address for d in plain.to(address))


@pytest.mark.parametrize("name", ["plain", "international"])
def test_no_message_id_is_delivered_twice(journeys, name):
    # Per database: a Message-ID is a function of the row, so two databases repeat each other's.
    ids = [str(d.message["Message-ID"]) for d in journeys[name].delivered()]
    assert ids and len(ids) == len(set(ids))


def test_every_delivered_message_parses_and_marketing_carries_one_click_unsubscribe(journeys):
    marketing = {step.subject for step in STEPS}
    delivered = all_delivered(journeys)
    assert delivered
    for d in delivered:
        m = d.message
        assert not m.defects, (d.recipient, m.defects)
        assert m.get_body(("plain",)).get_content().strip(), d.recipient
        assert m.get_body(("html",)).get_content().strip(), d.recipient
        assert m["Message-ID"] and m["Date"] and m["From"]
        if str(m["Subject"]) in marketing:
            # The one-click URL and the mailto: (through Postfix, folded as we wrote it), one token in both.
            assert re.fullmatch(r"<https?://\S+/unsubscribe/(\S+)>, <mailto:\S+@\S+\?subject=unsubscribe%20\1>",
                                str(m["List-Unsubscribe"])), d.recipient
            assert str(m["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"


def test_every_message_went_over_tls(journeys):
    delivered = all_delivered(journeys)
    assert delivered
    for d in delivered:
        assert "(using TLSv1.3 with cipher" in d.received_by_us, (d.recipient, d.received_by_us)
        assert " with ESMTPS " in d.received_by_us or " with UTF8SMTPS " in d.received_by_us


def test_the_international_addresses_never_hold_back_anyone_else(international):
    # Delivered or not, the IDN and UTF-8 addresses must not stop a pass or another person's mail,
    # and whatever did not go has its reason recorded.
    assert_passes_clean(international)
    assert_whole_journey(international, COMPANION)
    for email, row in international.rows():
        if row.state is not OutboxState.sent:
            assert row.smtp_reply or row.last_error, (email, row.key, row.state)


def outcomes(journey: Journey, address: str) -> list[tuple]:
    return [(row.key, row.state.value, row.smtp_reply, row.last_error) for email, row in journey.rows()
            if email == address]


def test_the_idn_domain_is_delivered_in_a_label_form(international):
    mine = international.to(IDN_ON_THE_WIRE)
    assert [str(d.message["Subject"]) for d in mine] == EVERY_SUBJECT, outcomes(international, IDN)
    for d in mine:
        assert d.message["X-Original-To"] == IDN_ON_THE_WIRE  # the envelope as the client sent it
        assert d.message["To"].addresses[0].domain == "xn--bcher-kva.example.com"
    assert_whole_journey(international, IDN)


def test_the_utf8_local_part_is_delivered_with_smtputf8(international):
    mine = international.to(UTF8_LOCAL)
    assert [str(d.message["Subject"]) for d in mine] == EVERY_SUBJECT, outcomes(international, UTF8_LOCAL)
    for d in mine:
        assert " with UTF8SMTPS " in d.received_by_us  # MAIL FROM ... SMTPUTF8
        # str(): the bytes parser leaves a raw UTF-8 address as surrogate escapes in .addresses;
        # the header's string value is decoded.
        assert str(d.message["To"]) == UTF8_LOCAL
        # A UTF-8 header, as RFC 6532 allows once SMTPUTF8 is in use (not an encoded-word).
        assert re.search(rb"^To: [^\n]*zo\xc3\xab@example\.com", d.path.read_bytes(), re.MULTILINE)
    assert_whole_journey(international, UTF8_LOCAL)


def test_an_address_postfix_refuses_fails_alone_and_is_marked_bounced(postfix_mta, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    upgrade(database_url)
    at = local(SIGNUP_DAY, 9)
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    others = ["eve@example.net", "fay@example.net"]
    for address in (others[0], REJECTED, others[1]):
        confirmed(sessions, address, at)
    inbox = postfix_mta.inbox()
    done = finished(nurture(tmp_path, database_url, postfix_mta, "send-due", "--now", at.isoformat()))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert re.search(r"sent 2, .*failed 1 \(bounced 1\)", done.stdout), done.stdout
    postfix_mta.settle()
    assert sorted(d.recipient for d in inbox.messages()) == others
    assert inbox.to(REJECTED) == []
    with sessions() as session:
        rows = {email: row for email, row in session.execute(
            select(Subscriber.email, OutboxMessage).join(OutboxMessage, OutboxMessage.subscriber_id == Subscriber.id))}
        assert rows[REJECTED].state is OutboxState.failed
        assert rows[REJECTED].smtp_reply.startswith("550 5.1.1"), rows[REJECTED].smtp_reply
        assert all(rows[a].state is OutboxState.sent and rows[a].smtp_reply.startswith("250") for a in others)
        nobody = session.scalar(select(Subscriber).where(Subscriber.email == REJECTED))
        assert nobody.status is Status.bounced
        assert session.scalar(select(Event).where(Event.kind == "bounced")).subscriber_id == nobody.id
    engine.dispose()
