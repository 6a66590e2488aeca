"""The privacy and care content as a reader gets it: every email of a real journey (the
confirmation, each sequence step, the newsletter) sent through the sender on a real SQLite file,
read back by the standard `email` parser, in both the text and the HTML part."""

from __future__ import annotations

import email
from datetime import datetime, timedelta, timezone
from email import policy
from email.utils import parseaddr

import pytest
from lxml import html as lxml_html

from nurture.content.content_rules import health_terms, load_health_terms
from nurture.content.sequences import load_newsletters, load_sequences
from nurture.db import transaction
from nurture.people import subscribers
from nurture.people.validation import Signup
from nurture.runtime import Runtime
from nurture.sending import broadcasts
from nurture.sending.journey import Planner
from nurture.sending.transports import MemoryTransport

from conftest import TEMPLATES, make_settings
from factories import REQUEST, confirmed

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)  # 09:00 in Chicago
CONFIRM = "Please confirm your subscription"
WELCOME, MECHANISM, RISKS, INVITE = (
    "Welcome, and a little history", "Part 2: how it may work", "Part 3: risks and side effects, plainly",
    "Part 4: is it right for you?",
)
REMINDER = "In case our invitation passed you by"  # only to people who clicked nothing in the invitation
NEWSLETTER = "Winter notes: darker days, research, clinic news"
MARKETING = (WELCOME, MECHANISM, RISKS, INVITE, REMINDER, NEWSLETTER)


class Delivered:
    """One message as the recipient's mail client reads it."""

    def __init__(self, data: bytes) -> None:
        self.message = email.message_from_bytes(data, policy=policy.default)
        parts = {part.get_content_type(): part.get_content() for part in self.message.iter_parts()}
        self.text = " ".join(parts["text/plain"].split())
        root = lxml_html.document_fromstring(parts["text/html"])
        self.hrefs = {a.get("href") for a in root.iter("a")}
        body = root.find("body")
        self.preheader = " ".join(body.find_class("preheader")[0].text_content().split())
        for hidden in body.find_class("preheader"):
            hidden.drop_tree()
        self.html_text = " ".join(body.text_content().split())

    def says(self, words: str) -> bool:
        """The words are in the text part and in what the HTML part shows."""
        return words in self.text and words in self.html_text


@pytest.fixture(scope="module")
def delivered(tmp_path_factory) -> dict[str, Delivered]:
    """Every email a subscriber gets, by subject: one journey from signup to the newsletter."""
    tmp = tmp_path_factory.mktemp("care")
    from nurture.migrate import upgrade

    url = f"sqlite:///{tmp / 'subscribers.db'}"
    upgrade(url)
    transport = MemoryTransport()
    rt = Runtime(make_settings(tmp, url), transport_override=transport)
    try:
        with transaction(rt.sessions) as session:  # someone who has not confirmed yet
            subscribers.subscribe(session, Signup("new@example.com", None, "America/Chicago", None, False), now=T0,
                                  request=REQUEST, default_timezone="America/Chicago", confirmations_per_day=3)
        confirmed(rt.sessions, "ann@example.com", T0)
        sender = rt.sender()
        for day in range(13):  # Ann clicks nothing, so the reminder comes on day 11
            sender.run_pass(T0 + timedelta(days=day))
        planner = Planner.from_settings(rt.settings)
        later = T0 + timedelta(days=20)
        with transaction(rt.sessions) as session:
            broadcast = broadcasts.create(session, newsletter=load_newsletters(TEMPLATES)["2026-12-winter"],
                                          audience="all", send_at=later, now=later, sequence=planner.sequence(),
                                          window=planner.window)
        sender.run_pass(later, key_prefix=f"bcast:{broadcast.id}")
    finally:
        rt.close()
    messages = [Delivered(data) for _, _, data in transport.sent]
    by_subject = {m.message["Subject"]: m for m in messages}
    assert len(by_subject) == len(messages) == 7, sorted(by_subject)
    return by_subject


def test_one_of_each_email_arrived(delivered) -> None:
    assert set(delivered) == {CONFIRM, *MARKETING}
    sequence = load_sequences(TEMPLATES)["nurture"]
    assert [step.subject for step in sequence.steps] == [WELCOME, MECHANISM, RISKS, INVITE, REMINDER]


def test_nothing_on_the_lock_screen_names_a_drug_a_diagnosis_or_a_specialty(delivered) -> None:
    # What a lock screen shows: the From name, the subject and the preheader (the inbox preview).
    terms = load_health_terms(TEMPLATES)
    for subject, message in delivered.items():
        name, _ = parseaddr(message.message["From"])
        assert name == "Clearwater Care Team"
        assert message.preheader
        for line in (name, subject, message.preheader):
            assert health_terms(line, terms) == [], (subject, line)


@pytest.mark.parametrize("subject", MARKETING)
def test_every_marketing_footer_has_the_fuller_crisis_care(delivered, subject: str) -> None:
    # The footer as the layout (issue 11) ships it; the validator requires these in its footer block.
    message = delivered[subject]
    for words in ("call 988", "text 988", "chat at 988lifeline.org", "call 911",
                  "This inbox is not monitored for emergencies",
                  "its use to treat depression and PTSD is off-label", "is not medical advice"):
        assert message.says(words), (subject, words)
    assert {"tel:988", "sms:988", "https://988lifeline.org/chat/", "tel:911"} <= message.hrefs, subject
    assert "https://988lifeline.org/chat/" in message.text  # never through the click tracker


def test_the_confirmation_has_the_short_crisis_line(delivered) -> None:
    message = delivered[CONFIRM]
    assert message.says("If you are in crisis: in the US, call 988 or text 988, or chat at 988lifeline.org")
    assert message.says("Call 911 if you are in immediate danger.")
    assert "[1] https://988lifeline.org/chat/" in message.message.get_body(("plain",)).get_content()
    assert {"tel:988", "sms:988", "https://988lifeline.org/chat/", "tel:911"} <= message.hrefs
    assert message.message["List-Unsubscribe"] is None  # still not marketing


def test_the_risks_email_says_when_to_reach_out_and_what_to_raise(delivered) -> None:
    message = delivered[RISKS]
    assert message.says("If your mood gets worse, or you have thoughts of suicide, during a course of treatment "
                        "or at any other time, please don't wait for your next appointment: call us on (608) 555-0142, "
                        "or call or text 988 at any hour. If you are in immediate danger, call 911.")
    assert message.says("Some interact with ketamine.") and message.says("Bring a list of everything you take")
    assert message.says("Pregnancy and breastfeeding.")
    assert message.says("Coming in three days: “Part 4: is it right for you?”")


def test_the_invitation_gives_the_practical_facts(delivered) -> None:
    message = delivered[INVITE]
    for words in ("a slow infusion into a vein (an IV drip)", "six infusions over two to three weeks",
                  "you stay until the strongest effects have passed", "you'll need someone to take you home",
                  "in person at our clinic or as a secure video call (telehealth)",
                  "Ask us for the current price of a consultation and of a course of treatment",
                  "Insurance often does not cover ketamine treatment for depression",
                  "This is the last of our four emails in this series."):
        assert message.says(words), words
    # Not a certified esketamine center by default: the invitation's own text does not offer it.
    assert "esketamine" not in message.text.split("Warm regards")[0].lower()


def test_the_facts_are_corrected(delivered) -> None:
    assert delivered[WELCOME].says("Calvin Stevens, a chemist at Wayne State University in Detroit, Michigan, "
                                   "who was working as a consultant for the drug company Parke-Davis")
    assert delivered[WELCOME].says("four short emails")
    assert delivered[WELCOME].says("Coming in two days: “Part 2: how it may work”")
    assert delivered[MECHANISM].says("as many as 4 million adults in the US may live with it")
    news = delivered[NEWSLETTER]
    assert news.says("In case you missed it: research background")
    assert news.says("Ketamine and ECT (published May 2023).") and news.says("doi:10.1056/NEJMoa2302399")
    assert news.says("Esketamine on its own (January 2025).")
    assert news.says("December 25, 2026") and news.says("January 1, 2027")


def test_the_reminder_is_short_honest_and_the_only_one(delivered) -> None:
    message = delivered[REMINDER]
    assert message.says("A short reminder") and "Email 5" not in message.text  # an extra, not a numbered email
    for words in ("It doesn't commit you to any treatment.",
                  "If now isn't the right time, that's completely fine, and you don't need to do anything.",
                  "This is the only reminder we'll send.",
                  "From now on you'll hear from us only occasionally, when we send our newsletter"):
        assert message.says(words), words
    assert len(message.text.split("Warm regards")[0].split()) < 200  # short
    # The numbered emails say it may come, so it breaks no promise they made.
    assert delivered[INVITE].says("at most one short reminder about this email")
    assert delivered[WELCOME].says("at most one short reminder about the consultation")
