"""The subscriber rules on a real SQLite file: subscribe, confirm, unsubscribe, resume, delivery-driven
status, and the consent-ledger rows each of them writes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from nurture.db import Database, make_engine, session_factory, transaction
from nurture.models import UNPLANNED, ConsentEvent, OutboxMessage, OutboxState, Status, Subscriber
from nurture.people import subscribers
from nurture.people.address_hashes import find_by_email
from nurture.people.consent_ledger import CONSENT_VERSION, CONSENT_WORDINGS, RequestInfo
from nurture.people.new_subscribers import SignupRequest, add_confirmed
from nurture.people.subscribers import ConfirmResult
from nurture.people.validation import Signup
from nurture.sending import outbox

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
REQUEST = RequestInfo(ip="192.0.2.7", user_agent="unit", source="signup-form")
RULES = dict(default_timezone="America/Chicago", confirmations_per_day=3)


@pytest.fixture
def db(sqlite_url) -> Database:
    engine = make_engine(sqlite_url)
    yield session_factory(engine)
    engine.dispose()


def signup(address: str = "ann@example.com", **overrides) -> Signup:
    values = dict(email=address, first_name="Ann", timezone=None, consent_version=CONSENT_VERSION, honeypot_filled=False)
    return Signup(**{**values, **overrides})


def subscribe(db: Database, at: datetime = T0, **overrides):
    with transaction(db) as session:
        return subscribers.subscribe(session, signup(**overrides), now=at, request=REQUEST, **RULES)


def confirm(db: Database, subscriber_id: int, round_: int = 1, at: datetime = T0) -> ConfirmResult:
    with transaction(db) as session:
        return subscribers.confirm(session, subscriber_id, round_, now=at, request=REQUEST)


def person(db: Database, subscriber_id: int) -> Subscriber:
    with db() as session:
        return session.get(Subscriber, subscriber_id)


def ledger(db: Database, subscriber_id: int) -> list[tuple[str, str, str | None]]:
    with db() as session:
        rows = session.scalars(select(ConsentEvent).where(ConsentEvent.subscriber_id == subscriber_id)
                               .order_by(ConsentEvent.id))
        return [(row.kind, row.scope, row.wording_version) for row in rows]


def outbox_rows(db: Database, subscriber_id: int) -> dict[str, OutboxState]:
    with db() as session:
        rows = session.execute(select(OutboxMessage.key, OutboxMessage.state)
                               .where(OutboxMessage.subscriber_id == subscriber_id))
        return dict(rows.all())


# --------------------------------------------------------------------------- subscribe

def test_a_new_address_is_pending_with_a_confirmation_queued_and_a_signup_in_the_ledger(db: Database) -> None:
    outcome = subscribe(db)
    assert outcome.confirmation_queued
    ann = person(db, outcome.subscriber_id)
    assert (ann.status, ann.email, ann.timezone, ann.confirm_round) == (Status.pending, "ann@example.com", "America/Chicago", 1)
    assert ann.email_hash != "ann@example.com" and "ann" not in ann.email_hash  # stored by keyed hash
    assert outbox_rows(db, ann.id) == {"sys:confirm:1": OutboxState.queued}
    assert ledger(db, ann.id) == [("signup", "all", CONSENT_VERSION)]
    with db() as session:
        [event] = session.scalars(select(ConsentEvent))
        assert (event.ip, event.user_agent, event.source) == ("192.0.2.7", "unit", "signup-form")
        assert event.wording == CONSENT_WORDINGS[CONSENT_VERSION]
        assert find_by_email(session, "ann@example.com").id == ann.id


def test_the_sequence_is_the_callers(db: Database) -> None:
    with transaction(db) as session:
        outcome = subscribers.subscribe(session, signup(), now=T0, request=REQUEST, sequence="winter", **RULES)
        [many] = subscribers.subscribe_many(session, [SignupRequest(signup("bo@example.com"), REQUEST, T0)],
                                            sequence="spring", **RULES)
        [imported] = add_confirmed(session, [signup("cy@example.com")], now=T0, source="import:paper",
                                   default_timezone="UTC", sequence="autumn")
    assert person(db, outcome.subscriber_id).sequence == "winter"
    assert person(db, many.subscriber_id).sequence == "spring"
    assert person(db, imported).sequence == "autumn"


def test_a_filled_honeypot_records_nothing(db: Database) -> None:
    outcome = subscribe(db, honeypot_filled=True)
    assert outcome == subscribers.SignupOutcome(None, False)
    with db() as session:
        assert session.scalar(select(Subscriber.id)) is None


def test_a_pending_address_gets_another_confirmation_after_ten_minutes_and_three_a_day_at_most(db: Database) -> None:
    first = subscribe(db)
    assert not subscribe(db, T0 + timedelta(minutes=9)).confirmation_queued
    assert subscribe(db, T0 + timedelta(minutes=10)).confirmation_queued
    assert subscribe(db, T0 + timedelta(minutes=20)).confirmation_queued
    assert not subscribe(db, T0 + timedelta(minutes=40)).confirmation_queued  # three today already
    assert subscribe(db, T0 + timedelta(days=1, minutes=1)).confirmation_queued
    assert set(outbox_rows(db, first.subscriber_id)) == {f"sys:confirm:{n}" for n in (1, 2, 3, 4)}
    # Every attempt is a signup in the ledger, whether or not an email went.
    assert [kind for kind, _, _ in ledger(db, first.subscriber_id)] == ["signup"] * 6


def test_a_confirmed_address_signing_up_again_changes_nothing(db: Database) -> None:
    ann = subscribe(db).subscriber_id
    confirm(db, ann)
    again = subscribe(db, T0 + timedelta(hours=1))
    assert again == subscribers.SignupOutcome(ann, False)
    assert person(db, ann).status is Status.confirmed
    assert ledger(db, ann) == [("signup", "all", CONSENT_VERSION), ("confirm", "all", CONSENT_VERSION)]


# --------------------------------------------------------------------------- confirm

def test_confirming_starts_the_sequence_once(db: Database) -> None:
    ann = subscribe(db).subscriber_id
    later = T0 + timedelta(hours=2)
    assert confirm(db, ann, round_=2) is ConfirmResult.not_pending  # a link from a round not sent yet
    assert confirm(db, ann, at=later) is ConfirmResult.confirmed
    assert confirm(db, ann, at=later + timedelta(hours=1)) is ConfirmResult.already
    ann_row = person(db, ann)
    assert (ann_row.status, ann_row.confirmed_at, ann_row.next_due_at) == (Status.confirmed, later, UNPLANNED)
    assert [kind for kind, _, _ in ledger(db, ann)] == ["signup", "confirm"]


def test_an_unsubscribed_person_cannot_confirm_an_old_link(db: Database) -> None:
    ann = subscribe(db).subscriber_id
    with transaction(db) as session:
        subscribers.unsubscribe(session, ann, now=T0, request=REQUEST)
    assert confirm(db, ann) is ConfirmResult.not_pending
    assert confirm(db, 999) is ConfirmResult.not_pending


# --------------------------------------------------------------------------- unsubscribe

def confirmed_with_mail_queued(db: Database) -> int:
    ann = subscribe(db).subscriber_id
    confirm(db, ann)
    with transaction(db) as session:
        for key in ("seq:nurture:welcome", "bcast:7"):
            outbox.enqueue(session, subscriber_id=ann, key=key, template="x.html.j2", due_at=T0, now=T0)
    return ann


def test_unsubscribing_from_the_series_keeps_the_newsletter(db: Database) -> None:
    ann = confirmed_with_mail_queued(db)
    with transaction(db) as session:
        assert subscribers.unsubscribe(session, ann, scope="series", now=T0, request=REQUEST)
        assert not subscribers.unsubscribe(session, ann, scope="series", now=T0, request=REQUEST)  # idempotent
    ann_row = person(db, ann)
    assert (ann_row.status, ann_row.wants_series, ann_row.wants_newsletter) == (Status.confirmed, False, True)
    rows = outbox_rows(db, ann)
    assert rows["seq:nurture:welcome"] is OutboxState.suppressed and rows["bcast:7"] is OutboxState.queued
    assert ledger(db, ann)[-1] == ("withdraw", "series", None)


def test_stopping_both_parts_is_an_unsubscribe_and_cancels_everything_queued(db: Database) -> None:
    ann = confirmed_with_mail_queued(db)
    with transaction(db) as session:
        subscribers.unsubscribe(session, ann, scope="series", now=T0, request=REQUEST)
        subscribers.unsubscribe(session, ann, scope="newsletter", now=T0, request=REQUEST)
    assert person(db, ann).status is Status.unsubscribed
    assert set(outbox_rows(db, ann).values()) <= {OutboxState.suppressed, OutboxState.sent}
    assert [scope for kind, scope, _ in ledger(db, ann) if kind == "withdraw"] == ["series", "newsletter"]


def test_an_unknown_scope_is_refused(db: Database) -> None:
    ann = subscribe(db).subscriber_id
    with transaction(db) as session, pytest.raises(ValueError, match="scope"):
        subscribers.unsubscribe(session, ann, scope="everything", now=T0, request=REQUEST)


def test_an_unsubscribed_address_opts_in_again_through_a_new_round(db: Database) -> None:
    ann = subscribe(db).subscriber_id
    confirm(db, ann)
    with transaction(db) as session:
        subscribers.unsubscribe(session, ann, now=T0, request=REQUEST)
    again = subscribe(db, T0 + timedelta(minutes=1), first_name="Annie")
    assert again == subscribers.SignupOutcome(ann, True)  # no ten-minute pause for a fresh opt-in
    ann_row = person(db, ann)
    assert (ann_row.status, ann_row.first_name, ann_row.confirm_round) == (Status.pending, "Annie", 2)
    assert "sys:confirm:2" in outbox_rows(db, ann)


# --------------------------------------------------------------------------- resume

def test_resuming_the_newsletter_after_stopping_everything_turns_on_only_that(db: Database) -> None:
    ann = confirmed_with_mail_queued(db)
    with transaction(db) as session:
        subscribers.unsubscribe(session, ann, now=T0, request=REQUEST)
        assert subscribers.may_resume(session.get(Subscriber, ann))
        assert subscribers.resume(session, ann, scope="newsletter", now=T0, request=REQUEST)
        assert not subscribers.resume(session, ann, scope="newsletter", now=T0, request=REQUEST)
    ann_row = person(db, ann)
    assert (ann_row.status, ann_row.wants_series, ann_row.wants_newsletter) == (Status.confirmed, False, True)
    assert ledger(db, ann)[-1] == ("resume", "newsletter", CONSENT_VERSION)


def test_resuming_the_series_forgets_the_steps_the_stop_cancelled(db: Database) -> None:
    ann = confirmed_with_mail_queued(db)
    with transaction(db) as session:
        subscribers.unsubscribe(session, ann, scope="series", now=T0, request=REQUEST)
        assert subscribers.resume(session, ann, scope="series", now=T0, request=REQUEST)
    assert "seq:nurture:welcome" not in outbox_rows(db, ann)
    ann_row = person(db, ann)
    assert ann_row.wants_series and ann_row.next_due_at == UNPLANNED


def test_only_someone_who_confirmed_and_stopped_may_resume(db: Database) -> None:
    pending = subscribe(db).subscriber_id
    bounced = subscribe(db, address="bo@example.com").subscriber_id
    confirm(db, bounced)
    with transaction(db) as session:
        subscribers.mark_status(session, bounced, Status.bounced, T0)
        assert not subscribers.resume(session, pending, scope="series", now=T0, request=REQUEST)
        assert not subscribers.resume(session, bounced, scope="series", now=T0, request=REQUEST)
        with pytest.raises(ValueError, match="scope"):
            subscribers.resume(session, bounced, scope="all", now=T0, request=REQUEST)


# --------------------------------------------------------------------------- delivery-driven status

def test_a_complaint_is_a_withdrawal_in_the_ledger_and_cancels_what_is_queued(db: Database) -> None:
    ann = confirmed_with_mail_queued(db)
    with transaction(db) as session:
        subscribers.mark_status(session, ann, Status.complained, T0 + timedelta(hours=1))
    ann_row = person(db, ann)
    assert (ann_row.status, ann_row.status_changed_at) == (Status.complained, T0 + timedelta(hours=1))
    assert set(outbox_rows(db, ann).values()) == {OutboxState.suppressed}
    with db() as session:
        last = session.scalars(select(ConsentEvent).order_by(ConsentEvent.id.desc())).first()
        assert (last.kind, last.source) == ("withdraw", "complaint")


def test_a_bounce_is_not_a_withdrawal(db: Database) -> None:
    ann = confirmed_with_mail_queued(db)
    with transaction(db) as session:
        subscribers.mark_status(session, ann, Status.bounced, T0)
    assert [kind for kind, _, _ in ledger(db, ann)] == ["signup", "confirm"]


# --------------------------------------------------------------------------- resend and import

def test_the_clinic_may_resend_a_confirmation_without_the_pause_but_within_the_cap(db: Database) -> None:
    ann = subscribe(db).subscriber_id
    clinic = RequestInfo(None, None, "admin:frontdesk")
    with transaction(db) as session:
        assert subscribers.resend_confirmation(session, ann, now=T0, request=clinic, confirmations_per_day=2)
        assert not subscribers.resend_confirmation(session, ann, now=T0, request=clinic, confirmations_per_day=2)
    assert ledger(db, ann)[-1] == ("resend-confirm", "all", None)
    assert set(outbox_rows(db, ann)) == {"sys:confirm:1", "sys:confirm:2"}


def test_an_import_with_consent_is_confirmed_with_an_import_row_and_no_email(db: Database) -> None:
    with transaction(db) as session:
        [cy] = add_confirmed(session, [signup("cy@example.com")], now=T0, source="import:paper-form",
                             default_timezone="UTC")
    cy_row = person(db, cy)
    assert (cy_row.status, cy_row.confirmed_at, cy_row.confirm_round) == (Status.confirmed, T0, 0)
    assert outbox_rows(db, cy) == {}
    assert ledger(db, cy) == [("import", "all", CONSENT_VERSION)]
