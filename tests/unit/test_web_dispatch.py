"""The web's immediate sending (nurture.web.dispatch): the in-process Dispatcher over a real
Sender, SQLite file and MemoryTransport, and DispatcherProcess, which runs it in a child process
of its own (that child builds its own runtime: its mail goes to the Maildir outbox)."""

from __future__ import annotations

import email
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from nurture.clock import utcnow
from nurture.db import transaction
from nurture.models import OutboxMessage
from nurture.people import subscribers
from nurture.people.consent_ledger import RequestInfo
from nurture.people.validation import Signup
from nurture.runtime import Runtime
from nurture.sending.transports import MemoryTransport
from nurture.web.dispatch import Dispatcher, DispatcherProcess

from conftest import make_settings

WHO = RequestInfo(None, None, "test")


@pytest.fixture
def settings(tmp_path, sqlite_url):
    return make_settings(tmp_path, sqlite_url)


@pytest.fixture
def runtime(settings):
    rt = Runtime(settings, transport_override=MemoryTransport())
    yield rt
    rt.close()


def sign_up(runtime, address: str, now: datetime) -> int:
    with transaction(runtime.sessions) as session:
        outcome = subscribers.subscribe(session, Signup(address, None, "UTC", None, False), now=now, request=WHO,
                                        default_timezone="UTC", confirmations_per_day=5)
    assert outcome.confirmation_queued
    return outcome.subscriber_id


def states(runtime) -> dict[str, str]:
    with runtime.sessions() as session:
        return {key: state.value for key, state in session.execute(select(OutboxMessage.key, OutboxMessage.state))}


def subjects(transport: MemoryTransport) -> list[tuple[str, str]]:
    return [(to, email.message_from_bytes(data)["Subject"]) for _from, to, data in transport.sent]


@pytest.fixture
def dispatcher(runtime):
    dispatcher = Dispatcher(runtime.sender(), utcnow, settle=0.01)
    dispatcher.start()
    yield dispatcher
    dispatcher.stop()


def test_owed_confirmations_are_sent_at_once(runtime, dispatcher):
    sign_up(runtime, "a@example.com", utcnow())
    sign_up(runtime, "b@example.com", utcnow())
    dispatcher.owe(2)
    assert dispatcher.wait_idle(20)
    assert sorted(to for to, _subject in subjects(runtime.transport)) == ["a@example.com", "b@example.com"]
    assert set(states(runtime).values()) == {"sent"}


def test_a_plain_wake_sends_confirmations_only_a_full_one_everything_due(runtime, dispatcher):
    person = sign_up(runtime, "a@example.com", utcnow())
    dispatcher.wake()
    assert dispatcher.wait_idle(20) and len(runtime.transport.sent) == 1
    with transaction(runtime.sessions) as session:
        subscribers.confirm(session, person, 1, now=utcnow() - timedelta(seconds=1), request=WHO)
    dispatcher.wake()  # confirmations only: the welcome step, due now, waits
    assert dispatcher.wait_idle(20) and len(runtime.transport.sent) == 1
    dispatcher.wake(full=True)  # as after a confirmation: the welcome step goes too
    assert dispatcher.wait_idle(20) and len(runtime.transport.sent) == 2
    assert sorted(states(runtime).items()) == [("seq:nurture:welcome-history", "sent"), ("sys:confirm:1", "sent")]


def test_stop_ends_the_thread_and_a_wake_afterwards_sends_nothing(runtime):
    dispatcher = Dispatcher(runtime.sender(), utcnow, settle=0.01)
    dispatcher.start()
    dispatcher.stop()
    assert not dispatcher._thread.is_alive()
    sign_up(runtime, "a@example.com", utcnow())
    dispatcher.wake()
    assert not dispatcher.wait_idle(0.3) and runtime.transport.sent == []


def maildir_messages(settings) -> list[email.message.Message]:
    return [email.message_from_bytes(path.read_bytes()) for path in sorted((settings.outbox_dir / "new").glob("*"))]


def test_the_dispatcher_process_sends_in_a_child_and_is_started_again_if_it_dies(runtime, settings):
    process = DispatcherProcess(settings)
    process.start()
    try:
        sign_up(runtime, "a@example.com", utcnow())
        process.owe(1)
        assert process.wait_idle(60)
        assert [m["To"] for m in maildir_messages(settings)] == ["a@example.com"]
        assert states(runtime) == {"sys:confirm:1": "sent"}
        first = process._process
        first.kill()
        first.join(10)
        sign_up(runtime, "b@example.com", utcnow())
        process.owe(1)  # finds the child dead: starts another, which sends
        assert process.wait_idle(60)
        assert process._process is not first and process._process.is_alive()
        assert sorted(m["To"] for m in maildir_messages(settings)) == ["a@example.com", "b@example.com"]
    finally:
        process.stop()
    assert not process._process.is_alive()
