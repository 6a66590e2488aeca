"""Backing up and restoring the SQLite database (``nurture db backup`` / ``db restore``).

A backup is taken online: the app keeps sending and signing people up while it runs. The copy
goes through SQLite's backup API inside one read transaction on the source, so it is the database
as it stood at one instant (every row committed before the backup began, nothing half-written).
In WAL mode a reader never blocks a writer, so the app's writes go on meanwhile; they land in the
WAL, which cannot be checkpointed past the backup's snapshot until the copy ends. The copy is made
page by page with a short pause between steps, so the backup shares the disk instead of taking it.

Both directions write to a temporary file beside the destination and rename it into place, so a
half-written file never carries the destination's name.

PostgreSQL has its own tools; for it this module only spells the ``pg_dump`` / ``pg_restore``
command for the configured URL, with the password hidden.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

__all__ = [
    "BackupError", "Backup", "Restore", "backup_sqlite", "restore_sqlite", "sqlite_path", "pg_dump_command",
    "pg_restore_command", "in_use", "known_revision",
]

SQLITE_HEADER = b"SQLite format 3\x00"
PAGES_PER_STEP = 1024  # 4 MiB at SQLite's default page size
PAUSE_BETWEEN_STEPS = 0.002  # seconds


class BackupError(Exception):
    """A backup or restore cannot go ahead; the message says why and what to do, in one line."""


@dataclass(frozen=True)
class Backup:
    path: Path
    size: int
    seconds: float


@dataclass(frozen=True)
class Restore:
    path: Path
    revision: str
    head: str
    forced: bool  # the database was in use and --force replaced it anyway

    @property
    def needs_upgrade(self) -> bool:
        return self.revision != self.head


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL (relative to the working folder, as the engine opens it); None for
    another database. An in-memory SQLite database has no file to copy: BackupError."""
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite"):
        return None
    if not url.database or url.database == ":memory:" or url.database.startswith("file::memory:"):
        raise BackupError("the database is in memory (NURTURE_DATABASE_URL): there is no file to back up or restore")
    return Path(url.database)


def _libpq_url(database_url: str) -> str:
    """The URL as libpq (pg_dump, psql) reads it: no SQLAlchemy driver name, the password hidden."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=True)


def pg_dump_command(database_url: str, target: str) -> str:
    """The ``pg_dump`` command that backs up the configured PostgreSQL database into ``target``
    (custom format, what ``pg_restore`` reads). The password shows as ``***``."""
    return shlex.join(["pg_dump", "--format=custom", f"--file={target}", _libpq_url(database_url)])


def pg_restore_command(database_url: str, source: str) -> str:
    """The ``pg_restore`` command that puts a ``pg_dump`` file back into the configured database."""
    return shlex.join(["pg_restore", "--clean", "--if-exists", "--no-owner", f"--dbname={_libpq_url(database_url)}",
                       source])


def backup_sqlite(database: Path, target: Path, *, force: bool = False, pages: int = PAGES_PER_STEP,
                  pause: float = PAUSE_BETWEEN_STEPS, clock: Callable[[], float] = time.monotonic) -> Backup:
    """Copy the live SQLite ``database`` into ``target``, consistent as of the moment it starts.

    Refuses an existing ``target`` unless ``force``. The copy is checked (``PRAGMA quick_check``)
    and made a single self-contained file (journal mode DELETE) before it takes ``target``'s name."""
    if not database.is_file():
        raise BackupError(f"no database at {database}: nothing to back up (is NURTURE_DATABASE_URL right?)")
    if target.is_dir():
        raise BackupError(f"{target} is a folder: give the backup's file name, such as {target / 'nurture.db'}")
    if _same_file(database, target):
        raise BackupError(f"{target} is the database itself: give the backup another name")
    if target.exists() and not force:
        raise BackupError(f"{target} exists: choose another name, or add --force to replace it")
    if not target.parent.is_dir():
        raise BackupError(f"no folder {target.parent} to write the backup into")
    started = clock()
    partial = _temporary_beside(target)
    try:
        with closing(sqlite3.connect(database, isolation_level=None, timeout=10)) as source, \
                closing(sqlite3.connect(partial, isolation_level=None)) as copy:
            # One read transaction for the whole copy: every step reads the same snapshot, so the
            # backup never restarts because the app wrote meanwhile (as it would, step by step).
            source.execute("BEGIN")
            source.execute("SELECT count(*) FROM sqlite_master").fetchone()
            source.backup(copy, pages=pages, progress=lambda *_: time.sleep(pause) if pause else None)
            source.execute("COMMIT")
            copy.execute("PRAGMA journal_mode=DELETE")
            _require_sound(copy, "quick_check", f"the copy of {database}")
        _fsync(partial)
        _move_into_place(partial, target, replace=force)
    except (sqlite3.DatabaseError, OSError) as exc:
        raise BackupError(f"could not back up {database}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return Backup(target, target.stat().st_size, clock() - started)


def restore_sqlite(source: Path, database: Path, *, force: bool = False,
                   check_revision: Callable[[str], str] | None = None) -> Restore:
    """Put the backup ``source`` in place of the SQLite ``database``, atomically.

    ``source`` must be a sound SQLite database of ours: ``PRAGMA integrity_check`` passes and it
    has the alembic version table; ``check_revision(revision)`` returns this code's head revision
    or raises BackupError for a schema this code does not know (a newer one); by default
    :func:`known_revision`. A database in use (see :func:`in_use`) is refused unless ``force``."""
    _require_sqlite_file(source)
    if _same_file(source, database):
        raise BackupError(f"{source} is the database itself: give the backup to restore")
    if not database.parent.is_dir():
        raise BackupError(f"no folder {database.parent} for the database (NURTURE_DATABASE_URL)")
    partial = _temporary_beside(database)
    try:
        try:
            with open(source, "rb") as src, open(partial, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        except OSError as exc:
            raise BackupError(f"could not copy {source} beside the database: {exc}") from None
        revision, head = _inspect(partial, source, check_revision or known_revision)
        _fsync(partial)
        forced = _swap(partial, database, force=force)
    finally:
        partial.unlink(missing_ok=True)
    return Restore(database, revision, head, forced)


def known_revision(revision: str) -> str:
    """This code's head revision, if ``revision`` is one of its migrations (the head or older);
    BackupError for one it does not know, such as a backup from a newer version of nurture."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from nurture.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    try:
        known = script.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise BackupError(f"the backup's schema {revision!r} is unknown to this version of nurture (a backup from "
                          "a newer version?): restore it with the version that made it")
    return script.get_current_head()


def in_use(database: Path) -> bool:
    """Whether any process has ``database`` open.

    In use means: some connection holds a lock on the file, which in WAL mode (as nurture runs
    SQLite) every open connection does for as long as it is open, idle or not: a running
    ``nurture run``, ``serve`` or ``scheduler`` always has one in its pool. The test takes the
    exclusive lock with no waiting; it fails while anyone else has the database open."""
    if not database.exists():
        return False
    probe = _exclusive(database)
    if probe is None:
        return True
    probe.close()
    return False


def _exclusive(database: Path) -> sqlite3.Connection | None:
    """A connection holding the exclusive lock on ``database`` (kept until it closes), or None
    when another connection has the file open."""
    probe = sqlite3.connect(database, isolation_level=None, timeout=0)
    try:
        probe.execute("PRAGMA locking_mode=EXCLUSIVE")
        probe.execute("BEGIN EXCLUSIVE")
        probe.execute("COMMIT")  # in exclusive locking mode the lock outlives the transaction
        return probe
    except sqlite3.OperationalError:
        probe.close()
        return None


def _swap(partial: Path, database: Path, *, force: bool) -> bool:
    """Rename ``partial`` to ``database``. While the old file is ours alone, hold its exclusive lock
    through the rename and fold its WAL back first, so no -wal or -shm of the old file is left to be
    read against the new one. Returns whether it was in use (and replaced because of ``force``)."""
    existed = database.exists()
    probe = _exclusive(database) if existed else None
    if existed and probe is None and not force:
        raise BackupError(f"the database {database} is in use (a nurture process has it open): stop nurture "
                          "(run, serve, scheduler, send-due) and run the restore again, or add --force")
    try:
        if probe is not None:
            probe.execute("PRAGMA journal_mode=DELETE")  # checkpoints and removes the old -wal and -shm
        _move_into_place(partial, database, replace=True)
    finally:
        if probe is not None:
            probe.close()
    forced = existed and probe is None
    if forced:
        # The processes still running keep the old file (now nameless) open and write to it; their
        # -wal and -shm must not be read against the new file.
        for suffix in ("-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
    return forced


def _inspect(copy: Path, source: Path, check_revision: Callable[[str], str]) -> tuple[str, str]:
    """The schema revision of the copied backup (and this code's head), after checking it is sound
    and ours. The copy is made a single file (journal mode DELETE); the app turns WAL on again."""
    try:
        with closing(sqlite3.connect(copy, isolation_level=None)) as connection:
            _require_sound(connection, "integrity_check", str(source))
            connection.execute("PRAGMA journal_mode=DELETE")
            tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "alembic_version" not in tables or "subscribers" not in tables:
                raise BackupError(f"{source} is a SQLite database but not one of nurture's (no alembic_version "
                                  "or subscribers table)")
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{source} cannot be read as a SQLite database: {exc}") from None
    if row is None:
        raise BackupError(f"{source} has an empty alembic_version table: it was never migrated")
    return row[0], check_revision(row[0])


def _require_sqlite_file(path: Path) -> None:
    if not path.exists():
        raise BackupError(f"no such file: {path}")
    if not path.is_file():
        raise BackupError(f"{path} is not a file")
    with open(path, "rb") as file:
        if file.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise BackupError(f"{path} is not a SQLite database (a backup from `nurture db backup` is one)")
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        # Part of that database is still in its write-ahead log, which a file copy would leave behind.
        raise BackupError(f"{path} has a write-ahead log beside it ({wal.name}): it is a live database, not a "
                          f"backup; take one from it with `nurture db backup` and restore that")


def _require_sound(connection: sqlite3.Connection, pragma: str, what: str) -> None:
    problems = [row[0] for row in connection.execute(f"PRAGMA {pragma}")]
    if problems != ["ok"]:
        raise BackupError(f"{what} is damaged ({pragma}: {'; '.join(problems[:3])})")


def _same_file(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and os.path.samefile(a, b)


def _temporary_beside(target: Path) -> Path:
    """A name in ``target``'s folder (so the rename stays on one file system) that is plainly not
    the target: a leftover after a crash is recognisable and never mistaken for a backup."""
    return target.with_name(f".{target.name}.{os.getpid()}.partial")


def _move_into_place(partial: Path, target: Path, *, replace: bool) -> None:
    if replace:
        os.replace(partial, target)
    else:
        try:
            os.link(partial, target)  # fails if the target appeared meanwhile, never overwrites it
        except FileExistsError:
            raise BackupError(f"{target} exists: choose another name, or add --force to replace it") from None
        partial.unlink()
    _fsync_folder(target.parent)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
