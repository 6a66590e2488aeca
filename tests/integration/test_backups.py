"""`nurture db backup` while the app writes, and `db restore`, as an operator runs them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone

import pytest

from conftest import SECRET, TEMPLATES
from factories import bulk_confirmed
from nurture.backups import backup_sqlite
from nurture.db import make_engine, session_factory

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)  # 09:00 in Chicago


def nurture(workdir, *args, database_url, extra_env=None, check=True):
    env = {**os.environ, "NURTURE_DATABASE_URL": database_url, "NURTURE_SECRET_KEY": SECRET,
           "NURTURE_TEMPLATES_DIR": str(TEMPLATES), "COLUMNS": "200", **(extra_env or {})}
    done = subprocess.run([sys.executable, "-m", "nurture", *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def one_line_error(done) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def confirmed_people(database_url, count, at):
    """``count`` confirmed subscribers, the engine closed after (an open pool counts as in use)."""
    engine = make_engine(database_url)
    bulk_confirmed(session_factory(engine), count, at)
    engine.dispose()


def snapshot(path):
    """What is committed now: every outbox row's id, the ids of those sent, the subscribers' count."""
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("SELECT id, state FROM outbox").fetchall()
        subscribers = connection.execute("SELECT count(*) FROM subscribers").fetchone()[0]
    return {i for i, _ in rows}, {i for i, state in rows if state == "sent"}, subscribers


def test_a_backup_taken_during_a_sending_pass_holds_everything_committed_before_it(tmp_path, sqlite_url, smtp_server):
    database = tmp_path / "subscribers.db"
    count = 3000
    confirmed_people(sqlite_url, count, T0 - timedelta(minutes=1))
    env = {"NURTURE_SMTP_URL": smtp_server.url, "NURTURE_SMTP_POOL_SIZE": "2"}
    sender = subprocess.Popen(
        [sys.executable, "-m", "nurture", "send-due", "--now", T0.isoformat()], cwd=tmp_path,
        env={**os.environ, "NURTURE_DATABASE_URL": sqlite_url, "NURTURE_SECRET_KEY": SECRET,
             "NURTURE_TEMPLATES_DIR": str(TEMPLATES), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(smtp_server.handler.messages) < 500 and sender.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sender.poll() is None, "the pass ended before the backup could be taken during it"
    outbox_before, sent_before, subscribers_before = snapshot(database)
    delivered_before = len(smtp_server.handler.messages)
    backup = tmp_path / "backups" / "during.db"
    backup.parent.mkdir()
    done = nurture(tmp_path, "db", "backup", str(backup), database_url=sqlite_url)
    running_after = sender.poll() is None
    out, err = sender.communicate(timeout=300)
    assert sender.returncode == 0, err
    assert running_after, "the pass ended before the backup finished"
    assert f"backed up sqlite:///{database} to {backup}" in done.stderr
    assert len(smtp_server.handler.messages) == count  # the pass went on and finished meanwhile
    assert delivered_before < count

    with closing(sqlite3.connect(backup)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    outbox_copy, sent_copy, subscribers_copy = snapshot(backup)
    assert subscribers_copy == subscribers_before == count
    assert outbox_before <= outbox_copy and sent_before <= sent_copy
    assert len(sent_before) > 0
    assert len(sent_copy) < count  # taken mid-pass, not after it
    assert [p.name for p in backup.parent.iterdir()] == ["during.db"]
    # The copy is a database nurture runs on: a later pass from it resends only what it had not sent.
    assert "database is up to date" in nurture(tmp_path, "db", "upgrade", database_url=f"sqlite:///{backup}").stderr


def test_a_backup_while_a_thread_writes_continuously_is_consistent_and_never_stops_the_writer(tmp_path, sqlite_url):
    database = tmp_path / "subscribers.db"
    with closing(sqlite3.connect(database, isolation_level=None)) as connection:
        connection.execute("CREATE TABLE journal (id INTEGER PRIMARY KEY, body TEXT)")
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO journal (body) VALUES (?)", [("x" * 400,) for _ in range(40_000)])
        connection.execute("COMMIT")  # about 18 MB: a backup of many steps of 64 pages
    stop = threading.Event()
    written: list[int] = []

    def writer():
        connection = sqlite3.connect(database, isolation_level=None, timeout=10)
        connection.execute("PRAGMA journal_mode=WAL")
        while not stop.is_set():
            connection.execute("INSERT INTO journal (body) VALUES ('during')")  # one commit each
            written.append(connection.execute("SELECT max(id) FROM journal").fetchone()[0])
        connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 50:
            time.sleep(0.001)
        committed_before = written[-1]
        during_start = len(written)
        backup_sqlite(database, tmp_path / "copy.db", pages=64, pause=0.001)
        writes_during = len(written) - during_start
    finally:
        stop.set()
        thread.join()
    assert writes_during > 0  # the writer was never held up for the whole backup
    with closing(sqlite3.connect(tmp_path / "copy.db")) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        copied = connection.execute("SELECT max(id), count(*) FROM journal").fetchone()
    assert copied[0] >= committed_before and copied[0] == copied[1]  # every row up to one instant, no gaps
    assert copied[0] < written[-1]  # the snapshot is of the moment the backup began, not its end


def test_backup_and_restore_commands_round_trip_and_refuse_bad_input(tmp_path, sqlite_url):
    database = tmp_path / "subscribers.db"
    confirmed_people(sqlite_url, 50, T0)
    nurture(tmp_path, "db", "backup", "first.db", database_url=sqlite_url)
    line = one_line_error(nurture(tmp_path, "db", "backup", "first.db", database_url=sqlite_url, check=False))
    assert "first.db exists: choose another name, or add --force" in line
    nurture(tmp_path, "db", "backup", "first.db", "--force", database_url=sqlite_url)
    with closing(sqlite3.connect(database, isolation_level=None)) as connection:
        connection.execute("DELETE FROM subscribers")
    done = nurture(tmp_path, "db", "restore", "first.db", database_url=sqlite_url)
    assert f"restored first.db into {database} (schema " in done.stderr and "db upgrade" not in done.stderr
    assert snapshot(database)[2] == 50

    (tmp_path / "notes.txt").write_text("not a database, but long enough to have a header\n")
    with closing(sqlite3.connect(tmp_path / "other.db")) as connection:
        connection.execute("CREATE TABLE t (x)")
    for args, words in [
        (("restore", "missing.db"), "no such file: missing.db"),
        (("restore", "notes.txt"), "notes.txt is not a SQLite database"),
        (("restore", "other.db"), "not one of nurture's"),
        (("backup", str(tmp_path)), "is a folder"),
        (("backup", "nowhere/x.db"), "no folder nowhere"),
        (("backup",), None),
    ]:
        done = nurture(tmp_path, "db", *args, database_url=sqlite_url, check=False)
        if words is None:
            assert done.returncode == 2 and "Traceback" not in done.stderr  # typer's usage error
        else:
            assert words in one_line_error(done)
    assert snapshot(database)[2] == 50
    missing = nurture(tmp_path, "db", "backup", "x.db", database_url="sqlite:///gone.db", check=False)
    assert "no database at gone.db" in one_line_error(missing)


HOLD_OPEN = "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]); c.execute('select 1 from subscribers').fetchall(); print('open', flush=True); time.sleep(60)"


def test_restore_refuses_a_database_a_running_nurture_has_open(tmp_path, sqlite_url):
    database = tmp_path / "subscribers.db"
    nurture(tmp_path, "db", "backup", "copy.db", database_url=sqlite_url)
    server = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(database)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "open"
        line = one_line_error(nurture(tmp_path, "db", "restore", "copy.db", database_url=sqlite_url, check=False))
        assert "is in use" in line and "--force" in line
        forced = nurture(tmp_path, "db", "restore", "copy.db", "--force", database_url=sqlite_url)
        assert "restart every nurture process now" in forced.stderr
    finally:
        server.kill()
        server.wait()


def test_restore_of_an_older_backup_says_to_upgrade(tmp_path):
    from nurture.migrate import upgrade

    upgrade(f"sqlite:///{tmp_path / 'old.db'}", "0003")
    done = nurture(tmp_path, "db", "restore", "old.db", database_url="sqlite:///live.db")
    assert "(schema 0003)" in done.stderr and "run `nurture db upgrade`" in done.stderr
    assert "created" not in nurture(tmp_path, "db", "upgrade", database_url="sqlite:///live.db").stderr


@pytest.mark.postgres
def test_on_postgresql_backup_gives_the_pg_dump_command_and_restore_refuses(tmp_path, postgres_url):
    url = postgres_url.replace("postgres@", "postgres:hunter2@")
    line = one_line_error(nurture(tmp_path, "db", "backup", "nightly.dump", database_url=url, check=False))
    assert "pg_dump --format=custom --file=nightly.dump 'postgresql://postgres:***@127.0.0.1:5432/test?options=" in line
    assert "hunter2" not in line
    line = one_line_error(nurture(tmp_path, "db", "restore", "nightly.dump", database_url=url, check=False))
    assert "restore works on SQLite only" in line and "pg_restore --clean" in line and "hunter2" not in line
    assert not (tmp_path / "nightly.dump").exists()
