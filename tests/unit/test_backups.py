"""Backups and restores of the SQLite file: atomic, checked, refusing what would lose data."""

from __future__ import annotations

import sqlite3
from contextlib import closing
import subprocess
import sys
import time

import pytest

from nurture.backups import (
    BackupError,
    backup_sqlite,
    in_use,
    known_revision,
    pg_dump_command,
    pg_restore_command,
    restore_sqlite,
    sqlite_path,
)
from nurture.migrate import upgrade


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "live.db"
    upgrade(f"sqlite:///{path}")
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i}" * 20,) for i in range(2000)])
        connection.execute("COMMIT")
    return path


def notes(path) -> int:
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        return connection.execute("SELECT count(*) FROM notes").fetchone()[0]


def revision(path) -> str:
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        return connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_sqlite_path():
    assert str(sqlite_path("sqlite:///subscribers.db")) == "subscribers.db"
    assert str(sqlite_path("sqlite:////var/lib/nurture/x.db")) == "/var/lib/nurture/x.db"
    assert sqlite_path("postgresql+psycopg://u@h/db") is None
    with pytest.raises(BackupError, match="in memory"):
        sqlite_path("sqlite://")


def test_pg_commands_name_the_database_and_hide_the_password():
    url = "postgresql+psycopg://app:s3cret@db.internal:5433/nurture?sslmode=require"
    dump = pg_dump_command(url, "nightly.dump")
    assert dump == "pg_dump --format=custom --file=nightly.dump 'postgresql://app:***@db.internal:5433/nurture?sslmode=require'"
    assert "s3cret" not in pg_restore_command(url, "nightly.dump")
    assert pg_restore_command(url, "x.dump").startswith("pg_restore --clean --if-exists --no-owner '--dbname=postgresql://app:***@")


def test_backup_is_a_sound_single_file_copy_and_refuses_to_overwrite(database, tmp_path):
    target = tmp_path / "copy.db"
    done = backup_sqlite(database, target, pages=16)
    assert done.size == target.stat().st_size > 0
    assert notes(target) == 2000
    with closing(sqlite3.connect(target, isolation_level=None)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    before = target.read_bytes()
    with pytest.raises(BackupError, match="exists: choose another name, or add --force"):
        backup_sqlite(database, target)
    assert target.read_bytes() == before
    backup_sqlite(database, target, force=True)
    with pytest.raises(BackupError, match="is a folder"):
        backup_sqlite(database, tmp_path)
    with pytest.raises(BackupError, match="no database at"):
        backup_sqlite(tmp_path / "none.db", tmp_path / "x.db")
    with pytest.raises(BackupError, match="no folder"):
        backup_sqlite(database, tmp_path / "missing" / "x.db")
    with pytest.raises(BackupError, match="is the database itself"):
        backup_sqlite(database, tmp_path / "." / "live.db", force=True)
    with pytest.raises(BackupError, match="is the database itself"):
        restore_sqlite(database, tmp_path / "live.db")
    with pytest.raises(BackupError, match="no folder"):
        restore_sqlite(target, tmp_path / "missing" / "live.db")
    assert notes(database) == 2000


def test_a_failed_backup_leaves_no_file_under_the_target_name(database, tmp_path, monkeypatch):
    import nurture.backups as backups

    def broken(*_args, **_kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(backups, "_require_sound", broken)
    with pytest.raises(BackupError, match="disk I/O error"):
        backup_sqlite(database, tmp_path / "copy.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.db"]


def test_restore_round_trip(database, tmp_path):
    backup_sqlite(database, tmp_path / "copy.db")
    with closing(sqlite3.connect(database, isolation_level=None)) as connection:
        connection.execute("DELETE FROM notes WHERE id > 10")
    done = restore_sqlite(tmp_path / "copy.db", database)
    assert (done.revision, done.needs_upgrade, done.forced) == (known_revision(done.revision), False, False)
    assert notes(database) == 2000
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_restore_into_a_missing_database_creates_it(database, tmp_path):
    restore_sqlite(database, tmp_path / "new.db")
    assert notes(tmp_path / "new.db") == 2000


def test_restore_of_an_older_schema_says_to_upgrade(tmp_path):
    old = tmp_path / "old.db"
    upgrade(f"sqlite:///{old}", "0002")
    done = restore_sqlite(old, tmp_path / "live.db")
    assert done.revision == "0002" and done.needs_upgrade and done.head == known_revision("0001")


def test_restore_refuses_what_is_not_a_backup_of_ours(database, tmp_path):
    with pytest.raises(BackupError, match="no such file"):
        restore_sqlite(tmp_path / "none.db", database)
    (tmp_path / "text.db").write_text("hello, I am a text file, long enough to have a header\n")
    with pytest.raises(BackupError, match="not a SQLite database"):
        restore_sqlite(tmp_path / "text.db", database)
    with pytest.raises(BackupError, match="is not a file"):
        restore_sqlite(tmp_path, database)
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other, isolation_level=None)) as connection:
        connection.execute("CREATE TABLE t (x)")
    with pytest.raises(BackupError, match="not one of nurture's"):
        restore_sqlite(other, database)
    newer = tmp_path / "newer.db"
    backup_sqlite(database, newer)
    with closing(sqlite3.connect(newer, isolation_level=None)) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    with pytest.raises(BackupError, match="unknown to this version of nurture"):
        restore_sqlite(newer, database)
    live = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(newer)], stdout=subprocess.PIPE, text=True)
    assert live.stdout.readline().strip() == "open"
    live.kill()
    live.wait()
    with pytest.raises(BackupError, match="write-ahead log beside it"):
        restore_sqlite(newer, database)  # a file copy would miss what is still in newer.db-wal
    assert notes(database) == 2000  # nothing was touched
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_restore_refuses_a_damaged_file(database, tmp_path):
    damaged = tmp_path / "damaged.db"
    backup_sqlite(database, damaged)
    data = bytearray(damaged.read_bytes())
    page = 4096
    for offset in range(page * 3, len(data) - page, page * 2):  # scribble over some pages' headers
        data[offset:offset + 16] = b"\xff" * 16
    damaged.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="damaged|cannot be read"):
        restore_sqlite(damaged, database)
    assert notes(database) == 2000


HOLD_OPEN = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA journal_mode=WAL")
connection.execute("INSERT INTO notes (body) VALUES ('written by the running app')")
connection.execute("SELECT count(*) FROM notes").fetchone()
print("open", flush=True)
time.sleep(60)
"""


def test_a_database_in_use_is_refused_unless_forced(database, tmp_path):
    backup_sqlite(database, tmp_path / "copy.db")
    assert not in_use(database)
    app = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(database)], stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout.readline().strip() == "open"  # an idle connection, as an idle web server holds
        assert in_use(database)
        with pytest.raises(BackupError, match="is in use .* stop nurture .* or add --force"):
            restore_sqlite(tmp_path / "copy.db", database)
        assert notes(database) == 2001
        done = restore_sqlite(tmp_path / "copy.db", database, force=True)
        assert done.forced
        assert not (tmp_path / "live.db-wal").exists() and not (tmp_path / "live.db-shm").exists()
        assert notes(database) == 2000
    finally:
        app.kill()
        app.wait()


def test_restore_over_a_stopped_database_folds_away_its_wal(database, tmp_path):
    backup_sqlite(database, tmp_path / "copy.db")
    # A stopped app can leave a WAL behind (a crash, or a reader that never checkpointed): it belongs
    # to the old file and must not be replayed into the restored one.
    writer = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(database)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "open"
    writer.kill()
    writer.wait()
    assert (tmp_path / "live.db-wal").exists()
    restore_sqlite(tmp_path / "copy.db", database)
    assert not (tmp_path / "live.db-wal").exists()
    assert notes(database) == 2000
    with closing(sqlite3.connect(database, isolation_level=None)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
