"""The address hash (the erasure tombstone) is keyed with a pepper kept in the database, so a dump
of the database cannot be matched against guessed addresses. On SQLite and PostgreSQL, across
the 0003 migration and a rotation of NURTURE_SECRET_KEY."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy import inspect as sa_inspect

from nurture.db import transaction
from nurture.migrate import upgrade
from nurture.models import Status, Subscriber
from nurture.people import address_hashes, data_rights, subscribers
from nurture.people.subscriber_files import import_csv
from nurture.people.validation import Signup
from nurture.runtime import Runtime

from conftest import POSTGRES_URL, _postgres_or_skip, make_settings
from factories import REQUEST, confirmed

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
KEPT, GONE = "kept@example.com", "gone@example.com"


def sha256(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()


def raw(sessions, sql: str, **params) -> list[tuple]:
    with sessions() as session:
        return [tuple(row) for row in session.execute(text(sql), params)]


def stored_pepper(sessions) -> bytes:
    [(value,)] = raw(sessions, "SELECT value FROM app_secrets WHERE name = 'tombstone_pepper'")
    return bytes.fromhex(value)


def sign_up(sessions, address: str, at: datetime = T0) -> int | None:
    with transaction(sessions) as session:
        return subscribers.subscribe(session, Signup(address, None, "UTC", None, False), now=at, request=REQUEST,
                                     default_timezone="UTC", confirmations_per_day=3).subscriber_id


def import_list(sessions, tmp_path, *addresses: str):
    path = tmp_path / f"list-{uuid.uuid4().hex[:6]}.csv"
    path.write_text("email,consent\n" + "".join(f"{a},yes\n" for a in addresses))
    return import_csv(sessions, path, now=T0 + timedelta(days=2), default_timezone="UTC")


# --------------------------------------------------------------------------------- a new database

def test_a_dump_does_not_reveal_who_subscribed_or_was_erased(runtime):
    sessions = runtime.sessions
    sign_up(sessions, KEPT)
    sign_up(sessions, GONE)
    with transaction(sessions) as session:
        assert data_rights.erase(session, GONE, now=T0 + timedelta(days=1))
    pepper = stored_pepper(sessions)
    assert len(pepper) == 32
    hashes = dict(raw(sessions, "SELECT status, email_hash FROM subscribers"))
    # Hashing a guessed address finds nothing without the pepper...
    assert not {sha256(KEPT), sha256(GONE)} & set(hashes.values())
    # ...and the stored value is HMAC-SHA256 under the database's own pepper.
    assert hashes["erased"] == hmac.new(pepper, sha256(GONE).encode(), hashlib.sha256).hexdigest()
    with sessions() as session:
        assert data_rights.export_personal(session, GONE)["subscriber"]["email_hash"] == hashes["erased"]


def test_an_erased_address_stays_out_of_imports_and_signs_up_again_only_on_its_old_row(runtime, tmp_path):
    sessions = runtime.sessions
    erased_id = confirmed(sessions, GONE, T0)
    with transaction(sessions) as session:
        data_rights.erase(session, GONE, now=T0 + timedelta(hours=1))
    report = import_list(sessions, tmp_path, GONE, "new@example.com")
    assert (report.created, report.suppressed) == (1, 1)
    assert sign_up(sessions, GONE, T0 + timedelta(days=3)) == erased_id  # the person's own double opt-in


def test_each_database_has_its_own_pepper(tmp_path):
    hashes = []
    for name in ("one", "two"):
        url = f"sqlite:///{tmp_path / name}.db"
        upgrade(url)
        rt = Runtime(make_settings(tmp_path, url))
        sign_up(rt.sessions, KEPT)
        hashes.append(raw(rt.sessions, "SELECT email_hash FROM subscribers")[0][0])
        rt.close()
    assert hashes[0] != hashes[1]


def test_the_pepper_is_read_once_per_process_not_per_signup(runtime):
    reads = []

    @event.listens_for(runtime.engine, "before_cursor_execute")
    def count(_conn, _cursor, statement, *_args):
        if "app_secrets" in statement:
            reads.append(statement)

    for i in range(5):
        sign_up(runtime.sessions, f"reader{i}@example.com")
    with runtime.sessions() as session:
        assert address_hashes.find_by_email(session, "reader3@example.com") is not None
    assert len(reads) == 1


def test_rotating_the_secret_key_keeps_every_lookup_working(tmp_path, database_url):
    before = Runtime(make_settings(tmp_path, database_url, secret_key="first-key-" + "a" * 40))
    kept_id = confirmed(before.sessions, KEPT, T0)
    confirmed(before.sessions, GONE, T0)
    with transaction(before.sessions) as session:
        data_rights.erase(session, GONE, now=T0 + timedelta(hours=1))
    before.close()

    after = Runtime(make_settings(tmp_path, database_url, secret_key="second-key-" + "b" * 40))
    try:
        with after.sessions() as session:
            assert address_hashes.find_by_email(session, KEPT).id == kept_id
        report = import_list(after.sessions, tmp_path, KEPT, GONE)
        assert (report.created, report.existing, report.suppressed) == (0, 1, 1)
        assert raw(after.sessions, "SELECT count(*) FROM subscribers") == [(2,)]
    finally:
        after.close()


def test_a_row_with_an_unkeyed_hash_is_still_found_and_erasure_keys_it(runtime, tmp_path):
    """A process still running the previous version during `db upgrade` writes the plain hash:
    lookups find such a row, and erasing it leaves a keyed tombstone."""
    sessions = runtime.sessions
    sid = confirmed(sessions, KEPT, T0)
    with transaction(sessions) as session:
        session.execute(text("UPDATE subscribers SET email_hash = :h"), {"h": sha256(KEPT)})
    assert import_list(sessions, tmp_path, KEPT).existing == 1
    with transaction(sessions) as session:
        assert data_rights.erase(session, KEPT, now=T0 + timedelta(hours=1))
    [(stored,)] = raw(sessions, "SELECT email_hash FROM subscribers")
    assert stored != sha256(KEPT)
    assert sign_up(sessions, KEPT, T0 + timedelta(days=1)) == sid


# ------------------------------------------------------------------------------- across 0003

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url_at_0002(request, tmp_path):
    """An empty database at the schema before keyed tombstones (0002)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        upgrade(url, "0002")
        yield url
        return
    _postgres_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}options=-csearch_path%3D{schema}"
    upgrade(url, "0002")
    yield url
    with admin.connect() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def seed_the_old_way(url: str) -> None:
    """What version 0002 wrote: a subscriber and an erased tombstone, both with sha256(address)."""
    engine = create_engine(url)
    row = ("INSERT INTO subscribers (email, email_hash, timezone, status, wants_series, wants_newsletter, sequence, "
           "tags, created_at, updated_at, status_changed_at, confirm_round) VALUES (:email, :hash, 'UTC', "
           ":status, :wants, :wants, 'nurture', '[]', :at, :at, :at, 1)")
    with engine.begin() as conn:
        conn.execute(text(row), {"email": KEPT, "hash": sha256(KEPT), "status": "confirmed", "wants": True, "at": T0})
        conn.execute(text(row), {"email": None, "hash": sha256(GONE), "status": "erased", "wants": False, "at": T0})
    engine.dispose()


def test_the_migration_keys_every_tombstone_and_nobody_erased_comes_back(url_at_0002, tmp_path):
    seed_the_old_way(url_at_0002)
    upgrade(url_at_0002)
    rt = Runtime(make_settings(tmp_path, url_at_0002))
    try:
        sessions = rt.sessions
        pepper = stored_pepper(sessions)
        stored = dict(raw(sessions, "SELECT status, email_hash FROM subscribers"))
        keyed = {a: hmac.new(pepper, sha256(a).encode(), hashlib.sha256).hexdigest() for a in (KEPT, GONE)}
        # Erased rows too: their plain hash is keyed in place, so none is left to match a guess.
        assert stored == {"confirmed": keyed[KEPT], "erased": keyed[GONE]}

        report = import_list(sessions, tmp_path, KEPT, GONE)
        assert (report.created, report.existing, report.suppressed) == (0, 1, 1)
        with sessions() as session:
            assert address_hashes.find_by_email(session, KEPT).status is Status.confirmed
            assert address_hashes.find_by_email(session, GONE).status is Status.erased
        # Only the person can come back, on the tombstone's own row.
        erased_id = raw(sessions, "SELECT id FROM subscribers WHERE status = 'erased'")[0][0]
        assert sign_up(sessions, GONE, T0 + timedelta(days=3)) == erased_id
        with sessions() as session:
            assert session.scalar(select(func.count()).select_from(Subscriber)) == 2
    finally:
        rt.close()


def test_the_migration_makes_one_pepper_and_upgrading_again_keeps_it(url_at_0002, tmp_path):
    upgrade(url_at_0002)
    rt = Runtime(make_settings(tmp_path, url_at_0002))
    first = stored_pepper(rt.sessions)
    upgrade(url_at_0002)
    assert stored_pepper(rt.sessions) == first
    assert raw(rt.sessions, "SELECT count(*) FROM app_secrets") == [(1,)]
    rt.close()


def test_a_downgrade_restores_plain_hashes_but_refuses_to_lose_an_erased_tombstone(url_at_0002):
    from alembic import command

    from nurture.migrate import alembic_config

    seed_the_old_way(url_at_0002)
    upgrade(url_at_0002)
    with pytest.raises(RuntimeError, match="erased subscriber"):
        command.downgrade(alembic_config(url_at_0002), "0002")
    engine = create_engine(url_at_0002)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM subscribers WHERE email IS NULL"))
    command.downgrade(alembic_config(url_at_0002), "0002")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT email_hash FROM subscribers")).all() == [(sha256(KEPT),)]
        assert "app_secrets" not in sa_inspect(conn).get_table_names()
    engine.dispose()
